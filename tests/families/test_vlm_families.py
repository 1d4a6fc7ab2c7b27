"""The Hugging Face VLM families beside LLaVA, each unmodified on a tiny random config (tests/families/vlm_tiny.py).

LLaVA-NeXT (anyres tiles), Idefics3 and SmolVLM (pixel shuffle), Qwen2-VL and Qwen2.5-VL (merged patches, M-RoPE),
Gemma 3 (pooled tokens, bidirectional among them), PaliGemma (bidirectional prefix). For each: the decoder's spec
and bit-identical logits, the image-token mask against the model's own count, neuron scores against brute force
through the real W_out and against autograd and finite differences (with plain torch hooks, not lmscope's), and
the image tokens' pixel boxes against the model itself (a vision tower with no layers: each token reads exactly its
pixels).
"""

import math

import pytest
import torch

import lmscope
from lmscope.errors import FamilySpecError, InputError
from lmscope.methods.neurons import NeuronConfig
from lmscope.methods.neurons.vision import find_image_neurons, image_mask, image_token_id
from lmscope.model.sites import Site
from lmscope.model.vlm_layouts import coverage, image_token_boxes, image_token_layout, paint
from tests.families.vlm_tiny import CASES, IMAGE_TOKEN, TEXT, expected_tokens, idefics_inputs, tiny_vlm
from tests.helpers import tiny_tokenizer

NAMES = list(CASES)
GRIDS = {"qwen2_vl": (2, 3), "qwen2_5_vl": (2, 4), "gemma3": (2, 2), "paligemma": (4, 4)}  # one token grid
TILES = {"idefics3": (1, 2), "smolvlm": (1, 2)}  # the tiny tokenizer has no <row_R_col_C> tags to read them from
PATCH = {"llava_next": 7, "idefics3": 7, "smolvlm": 7, "qwen2_vl": 4, "qwen2_5_vl": 4, "gemma3": 4, "paligemma": 4}


@pytest.fixture(params=NAMES)
def name(request) -> str:
    return request.param


def load(name: str, local: bool = False):
    return lmscope.load((tiny_vlm(name, local), tiny_tokenizer()))


def plain_keys(lm, inputs: dict) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """(logits, layer -> MLP key (batch, pos, d_mlp)): the inputs of the real W_out modules, by plain torch hooks."""
    keys: dict[int, torch.Tensor] = {}
    handles = [lm.layout.part(layer, "mlp_out_proj").register_forward_pre_hook(
        lambda _m, args, layer=layer: keys.__setitem__(layer, args[0])) for layer in range(lm.n_layers)]
    try:
        logits = lm.model(**inputs, use_cache=False).logits
    finally:
        for h in handles:
            h.remove()
    return logits, keys


def test_decoder_spec_and_bit_identical_logits(name):
    model = tiny_vlm(name)
    lm = lmscope.load((model, tiny_tokenizer()))
    assert lm.layout.spec.name == CASES[name].spec and lm.layout.spec.blocks == CASES[name].decoder
    assert (lm.n_layers, lm.d_model, lm.d_mlp) == (3, 32, 48)
    x = CASES[name].inputs(2)

    def hooks() -> list[int]:  # transformers installs output-capturing hooks of its own on a first call
        return [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]

    with torch.no_grad():
        bare = model(**x).logits
        before = hooks()
        assert torch.equal(lm(x), bare)
        _, cache = lm.run_with_cache(x, [Site(1, "mlp_key"), Site(2, "resid_post")])
        assert cache[Site(1, "mlp_key")].shape == (*x["input_ids"].shape, 48)
        assert torch.equal(lm(x), bare)
    assert hooks() == before  # lmscope's hooks removed


def test_the_real_loading_path_picks_each_familys_unmodified_class(name):
    """lmscope.load(<hub id or folder>) reads a config with a vision_config through AutoModelForImageTextToText."""
    from transformers import AutoModelForImageTextToText

    model = tiny_vlm(name)
    assert model.config.vision_config is not None
    assert type(AutoModelForImageTextToText.from_config(model.config)) is type(model)


@pytest.mark.parametrize("name", ["gemma3", "paligemma"])
@torch.no_grad()
def test_token_types_make_the_image_attention_bidirectional(name):
    """The inputs the checks below run on really attend bidirectionally among the image tokens (Gemma 3) or over
    the prefix (PaliGemma): Gemma 3 without token_type_ids, PaliGemma with the text as a (causal) suffix differ."""
    model = tiny_vlm(name)
    x = CASES[name].inputs(1)
    if name == "gemma3":
        causal = {k: v for k, v in x.items() if k != "token_type_ids"}
    else:
        causal = {**x, "token_type_ids": (x["input_ids"] != IMAGE_TOKEN).long()}
    assert not torch.allclose(model(**x).logits, model(**causal).logits)


def test_image_token_id_and_the_mask_against_the_models_own_count(name):
    lm = load(name)
    x = CASES[name].inputs(2)
    assert image_token_id(lm) == IMAGE_TOKEN
    mask = image_mask(lm, x["input_ids"])
    assert int(mask.sum()) == expected_tokens(lm.model, x)  # what the model's get_image_features gives
    assert mask[:, 1:-len(TEXT)].all() and not mask[:, 0].any() and not mask[:, -len(TEXT):].any()
    assert [layout.frame.numel() for layout in image_token_layout(lm, x, TILES.get(name))] == mask.sum(1).tolist()
    short = {**x, "input_ids": x["input_ids"].clone()}
    short["input_ids"][:, 1] = 7  # one image token too few
    with pytest.raises(InputError, match="image tokens"):
        image_token_layout(lm, short, TILES.get(name))


def test_scores_against_brute_force_through_w_out_and_autograd(name):
    """Contribution: each neuron alone through the real W_out module, dotted with the target's row of W_U, at the
    predicting position. Gradient x activation: autograd through the bare model, summed over the image tokens."""
    lm = load(name)
    x = CASES[name].inputs(2)
    res = find_image_neurons(lm, x, config=NeuronConfig(top_k=3))
    mask = image_mask(lm, x["input_ids"]).float()  # (batch, pos)
    with torch.enable_grad():
        logits, keys = plain_keys(lm, x)
        targets = logits[:, -1].argmax(-1)  # (batch,) the model's own next tokens
        picked = logits[torch.arange(2), -1, targets].sum()
        grads = torch.autograd.grad(picked, [keys[layer] for layer in range(lm.n_layers)])
    assert res.target_ids == targets.tolist()
    eye = torch.eye(lm.d_mlp)
    for layer in range(lm.n_layers):
        gxa = (keys[layer] * grads[layer] * mask[..., None]).sum(1).detach()  # (batch, d_mlp)
        torch.testing.assert_close(res.gradxact[:, layer], gxa, rtol=1e-4, atol=1e-6)
        module = lm.layout.part(layer, "mlp_out_proj")
        with torch.no_grad():
            bias = module(torch.zeros(1, lm.d_mlp))[0]
            for b in range(2):
                o, u = keys[layer][b, -1].detach(), lm.W_U[targets[b]].detach()  # (d_mlp,), (d_model,)
                brute = (module(eye * o[:, None]) - bias) @ u  # (d_mlp,) each neuron alone
                torch.testing.assert_close(res.contribution[b, layer], brute, rtol=1e-4, atol=1e-6)
                for top in res.top[b]:
                    if top["layer"] == layer:
                        assert top["contribution"] == pytest.approx(float(brute[top["neuron"]]), rel=1e-4, abs=1e-6)


@torch.no_grad()
def scaled_logit(lm, inputs: dict, where: tuple[int, int, torch.Tensor], target: int, scale: float) -> float:
    """Row 0's last logit of ``target`` with neuron ``where`` = (layer, neuron, positions (pos,) bool) scaled there,
    by a plain pre-hook on the real W_out."""
    layer, neuron, positions = where

    def hook(_module, args):
        key = args[0].clone()
        key[0, positions, neuron] *= scale
        return (key,)

    handle = lm.layout.part(layer, "mlp_out_proj").register_forward_pre_hook(hook)
    try:
        return float(lm.model(**inputs, use_cache=False).logits[0, -1, target])
    finally:
        handle.remove()


def test_gradient_times_activation_is_the_derivative_of_scaling_the_image_activations(name):
    """sum_p a_p dL/da_p over the image tokens = d/de L(a (1 + e) at the image tokens): a central difference through
    the whole float64 model (image attention, M-RoPE, pooling and all), by a plain hook on the real W_out.

    A tiny random decoder's image path is faint (derivatives near float32 rounding: RMSNorms compute in float32
    even in a float64 model), so its matrices are scaled x5 first.
    """
    lm = load(name)
    with torch.no_grad():
        for p in (p for block in lm.layout.blocks for p in block.parameters() if p.dim() == 2):
            p.mul_(5.0)
    lm.model.to(torch.float64)
    x = {k: v.double() if v.is_floating_point() else v for k, v in CASES[name].inputs(1).items()}
    res = find_image_neurons(lm, x, config=NeuronConfig(top_k=2))
    mask = image_mask(lm, x["input_ids"])[0]
    target = res.target_ids[0]
    flat = res.gradxact[0].abs().flatten().topk(2).indices.tolist()
    eps = 1e-2
    for layer, neuron in (divmod(i, lm.d_mlp) for i in flat):
        up, down = (scaled_logit(lm, x, (layer, neuron, mask), target, 1 + e) for e in (eps, -eps))
        derivative = (up - down) / (2 * eps)
        assert float(res.gradxact[0, layer, neuron]) == pytest.approx(derivative, rel=5e-4)


def test_patch_maps_are_the_top_neurons_activations_and_map_back_to_the_image(name):
    lm = load(name)
    x = CASES[name].inputs(1)
    res = find_image_neurons(lm, x, config=NeuronConfig(top_k=2))
    mask = image_mask(lm, x["input_ids"])[0]
    n = int(mask.sum())
    with torch.no_grad():
        _, keys = plain_keys(lm, x)
    layout = image_token_layout(lm, x, TILES.get(name))[0]
    for j, top in enumerate(res.top[0]):
        acts = keys[top["layer"]][0, mask, top["neuron"]]  # (n,) the neuron over the image tokens
        torch.testing.assert_close(res.patch_acts[0, j, :n], acts)
        if name in GRIDS:
            assert res.grid == list(GRIDS[name]) and layout.grid == GRIDS[name]
            torch.testing.assert_close(res.patch_map(0, j), acts.view(GRIDS[name]))
        for view in layout.view.unique().tolist():
            if view < 0:
                continue
            image = paint(acts, layout, view)  # (height, width)
            assert image.shape == layout.size and not image.isnan().any()
            for k in torch.nonzero((layout.view == view) & ~layout.box.isnan().any(1)).flatten().tolist():
                x0, y0, x1, y1 = layout.box[k].tolist()
                assert float(image[int((y0 + y1) / 2), int((x0 + x1) / 2)]) == pytest.approx(float(acts[k]))


EXPECTED_BOXES = {  # (token index, box in the image) worked out by hand from each family's code
    "llava_next": [(0, (0, 0, 14, 3)), (15, (42, 9, 56, 12)), (16, (0, 0, 7, 6)), (24, None), (25, (0, 6, 7, 12)),
                   (32, (49, 6, 56, 12)), (33, None)],  # 12 x 56 image, canvas 28 x 56 with the image at rows 8..20
    "idefics3": [(0, (0, 0, 14, 14)), (3, (14, 14, 28, 28)), (4, (28, 0, 42, 14)), (8, (0, 0, 28, 14)),
                 (11, (28, 14, 56, 28))],  # 1 x 2 tiles of 28 + the global image squashed 56 x 28 -> 28 x 28
    "qwen2_vl": [(0, (0, 0, 8, 8)), (2, (16, 0, 24, 8)), (3, (0, 8, 8, 16)), (5, (16, 8, 24, 16))],
    "qwen2_5_vl": [(0, (0, 0, 8, 8)), (3, (24, 0, 32, 8)), (4, (0, 8, 8, 16))],
    "gemma3": [(0, (0, 0, 8, 8)), (1, (8, 0, 16, 8)), (3, (8, 8, 16, 16))],
    "paligemma": [(0, (0, 0, 4, 4)), (5, (4, 4, 8, 8)), (15, (12, 12, 16, 16))],
}
EXPECTED_BOXES["smolvlm"] = EXPECTED_BOXES["idefics3"]
SIZES = {"llava_next": (12, 56), "idefics3": (28, 56), "smolvlm": (28, 56), "qwen2_vl": (16, 24),
         "qwen2_5_vl": (16, 32), "gemma3": (16, 16), "paligemma": (16, 16)}


def test_boxes_tile_the_image_once_per_view(name):
    lm = load(name)
    x = CASES[name].inputs(2)
    boxes = image_token_boxes(lm, x, TILES.get(name))
    n = image_mask(lm, x["input_ids"]).sum(1).tolist()
    assert [b.shape for b in boxes] == [(k, 4) for k in n]
    layout = image_token_layout(lm, x, TILES.get(name))[0]
    assert layout.size == SIZES[name]
    for k, box in EXPECTED_BOXES[name]:
        if box is None:
            assert layout.box[k].isnan().all() and layout.frame[k] == -1
        else:
            assert layout.box[k].tolist() == pytest.approx(list(box))
    views = [v for v in layout.view.unique().tolist() if v >= 0]
    assert views == ([0, 1] if name in ("llava_next", "idefics3", "smolvlm") else [0])
    for view in views:
        count, _ = coverage(layout, view)
        assert count.shape == layout.size and bool((count == 1).all())  # every pixel, exactly one token a view
    if name == "llava_next":  # 16 base tokens, then 2 rows of 8 tile tokens each ended by a newline
        assert int((layout.frame == -1).sum()) == 2 and layout.view.tolist()[:16] == [0] * 16


@pytest.mark.parametrize("size", [(12, 56), (20, 56), (56, 12), (30, 40), (9, 9), (50, 31), (100, 250)])
@torch.no_grad()
def test_llava_next_layouts_for_many_image_sizes(size):
    """The layout's token count is what the model packs (its forward accepts exactly that many image tokens); the
    base view covers the image once, the unpadded tiles at most once (the model's unpadding may drop a sliver)."""
    model = tiny_vlm("llava_next")
    lm = lmscope.load((model, tiny_tokenizer()))
    x = {"image_sizes": torch.tensor([list(size)]), "input_ids": torch.tensor([[1, IMAGE_TOKEN] + TEXT]),
         "pixel_values": torch.randn(1, 5, 3, 28, 28, generator=torch.Generator().manual_seed(0))}
    with pytest.raises(InputError, match="image tokens"):
        image_token_layout(lm, x)
    n = len(model.model.get_image_features(x["pixel_values"], x["image_sizes"], return_dict=True).pooler_output[0])
    x["input_ids"] = torch.tensor([[1] + [IMAGE_TOKEN] * n + TEXT])
    layout = image_token_layout(lm, x)[0]
    assert layout.size == size and torch.isfinite(model(**x).logits).all()
    assert bool((coverage(layout, 0)[0] == 1).all()) and bool((coverage(layout, 1)[0] <= 1).all())
    rows = int((layout.frame == -1).sum())  # one newline a row of the unpadded grid
    assert int((layout.view == 1).sum()) % rows == 0


def _poke(name: str, x: dict, frame: int, y: int, col: int) -> dict:
    """``x`` with pixel (y, col) of frame ``frame`` changed (every channel)."""
    x = {k: v.clone() for k, v in x.items()}
    if name in ("llava_next", "idefics3", "smolvlm"):
        x["pixel_values"][0, frame, :, y, col] += 1.0
    elif name in ("gemma3", "paligemma"):
        x["pixel_values"][0, :, y, col] += 1.0
    else:  # Qwen: flat patches ordered (h / m, w / m, m, m), features (channel, time, row, col) of a 4 x 4 patch
        _, _, w = x["image_grid_thw"][0].tolist()
        gy, gx = y // 4, col // 4
        patch = ((gy // 2) * (w // 2) + gx // 2) * 4 + (gy % 2) * 2 + gx % 2
        feature = torch.arange(3 * 2) * 16 + (y % 4) * 4 + col % 4  # every (channel, time)
        x["pixel_values"][patch, feature] += 1.0
    return x


def _frames(name: str, x: dict) -> list[tuple[int, int, int]]:
    """(frame, height, width) of every frame the vision tower sees in row 0."""
    if name in ("llava_next", "idefics3", "smolvlm"):
        return [(f, 28, 28) for f in range(x["pixel_values"].shape[1])]
    if name.startswith("qwen"):
        _, h, w = x["image_grid_thw"][0].tolist()
        return [(0, h * 4, w * 4)]
    return [(0, 16, 16)]


def _probe(lm, name: str, x: dict, layout) -> None:
    """Poke one pixel of each patch of each frame: exactly the tokens whose frame box holds it change."""
    mask = image_mask(lm, x["input_ids"])[0]

    def decoder_input(inputs: dict) -> torch.Tensor:  # (n, d_model) at the image tokens
        _, cache = lm.run_with_cache(inputs, [Site(0, "resid_pre")], stop_after=Site(0, "resid_pre"))
        return cache[Site(0, "resid_pre")][0, mask]

    base = decoder_input(x)
    p, fb = PATCH[name], layout.frame_box
    seen = torch.zeros(len(base), dtype=torch.bool)
    for frame, h, w in _frames(name, x):
        for y in range(p // 2, h, p):
            for col in range(p // 2, w, p):
                changed = (decoder_input(_poke(name, x, frame, y, col)) - base).abs().amax(-1) > 0  # (n,)
                holds = (layout.frame == frame) & (fb[:, 0] <= col + 0.5) & (col + 0.5 < fb[:, 2]) & \
                        (fb[:, 1] <= y + 0.5) & (y + 0.5 < fb[:, 3])
                assert torch.equal(changed, holds), (frame, y, col)
                seen |= changed
    assert torch.equal(seen, layout.frame >= 0)  # every token with pixels reads some; row ends none


@torch.no_grad()
def test_each_image_token_reads_exactly_the_pixels_of_its_frame_box(name):
    """With a vision tower of no layers every image token depends only on the pixels it covers: poking one pixel of
    each patch of each frame changes exactly the decoder inputs of the tokens whose frame box holds that pixel (the
    order of tiles, merges, pools, unpadding and newlines, checked against the model's own code)."""
    lm = load(name, local=True)
    x = CASES[name].inputs(1)
    _probe(lm, name, x, image_token_layout(lm, x, TILES.get(name))[0])


@pytest.mark.parametrize("size", [(56, 12), (50, 31), (30, 100)])
@torch.no_grad()
def test_llava_next_tokens_read_their_frame_boxes_for_other_image_sizes(size):
    """Tall, near-square and wide images: other canvases (2 x 1, 2 x 2, 1 x 2 tiles), unpadding rows or columns."""
    lm = load("llava_next", local=True)
    x = {"image_sizes": torch.tensor([list(size)]), "input_ids": torch.tensor([[1, IMAGE_TOKEN] + TEXT]),
         "pixel_values": torch.randn(1, 5, 3, 28, 28, generator=torch.Generator().manual_seed(0))}
    n = len(lm.model.model.get_image_features(x["pixel_values"], x["image_sizes"], return_dict=True).pooler_output[0])
    x["input_ids"] = torch.tensor([[1] + [IMAGE_TOKEN] * n + TEXT])
    _probe(lm, "llava_next", x, image_token_layout(lm, x)[0])


def test_idefics_tiles_from_the_tags_or_given_and_one_clear_error_otherwise():
    """Idefics3 / SmolVLM do not know their tile grid from the pixels: it comes from the <row_R_col_C> tags the
    processor writes, or from tiles=(rows, cols)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    base = tiny_tokenizer().get_vocab()
    words = sorted(base, key=base.get)
    words[60:62] = ["<row_1_col_1>", "<row_1_col_2>"]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tagged = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    lm = lmscope.load((tiny_vlm("idefics3"), tagged))
    x = idefics_inputs(1)
    ids = [1, 60] + [IMAGE_TOKEN] * 4 + [61] + [IMAGE_TOKEN] * 8 + TEXT
    tags = {**x, "input_ids": torch.tensor([ids])}
    assert torch.equal(image_token_boxes(lm, tags)[0], image_token_boxes(load("idefics3"), x, tiles=(1, 2))[0])
    with torch.no_grad():
        assert torch.equal(lm(tags), lm.model(**tags).logits)
    plain = load("idefics3")
    with pytest.raises(InputError, match="tiles="):
        image_token_layout(plain, x)
    with pytest.raises(InputError, match="do not fit"):
        image_token_layout(plain, x, tiles=(2, 2))
    single = idefics_inputs(1, tiles=(0, 0))  # one unsplit frame needs no tiles
    layout = image_token_layout(plain, single)[0]
    assert layout.size == (28, 28) and layout.grid == (2, 2)
    assert math.isclose(float(coverage(layout)[0].min()), 1.0)


def test_a_model_with_no_layout_is_one_clear_error():
    from tests.helpers import tiny_lm

    with pytest.raises(FamilySpecError, match="no image token layout"):
        image_token_layout(tiny_lm("llama"), {"input_ids": torch.tensor([[1, 4, 5]])})
