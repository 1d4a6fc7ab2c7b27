"""Patch maps by the paper's definition (SPEC §5): neurons ranked by g summed over the image tokens, listed apart from
the forward contribution at the predicting position, and checked by occlusion against random patches and a blank
image, on a tiny random LLaVA."""

import pytest
import torch

import lmscope
from lmscope.errors import ConfigError
from lmscope.io import load_result
from lmscope.methods.neurons import NeuronConfig, OcclusionConfig, occlusion_check
from lmscope.methods.neurons.vision import find_image_neurons
from lmscope.model.sites import Site
from tests.families.test_vlm import IMAGE_TOKEN, inputs, tiny_llava
from tests.helpers import tiny_tokenizer

CELL, SIDE = 7, 4  # the tiny LLaVA's patches: 7 x 7 pixels, a 4 x 4 grid over its 28 x 28 images


@pytest.fixture(scope="module")
def lm():
    return lmscope.load((tiny_llava(), tiny_tokenizer()))


def padded_pair() -> dict:
    """Two rows of one image each, the second one token shorter (right-padded)."""
    ids = torch.tensor([[1] + [IMAGE_TOKEN] * 16 + [4, 5, 6], [1] + [IMAGE_TOKEN] * 16 + [4, 5, 0]])
    mask = torch.ones_like(ids)
    mask[1, -1] = 0
    pixels = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}


def image_keys(lm, x: dict, b: int, neurons: list[dict]) -> torch.Tensor:
    """(n_neurons, 16) the neurons' MLP keys at row ``b``'s image tokens, read by a plain cache."""
    _, cache = lm.run_with_cache(x, [Site(t["layer"], "mlp_key") for t in neurons])
    where = x["input_ids"][b] == IMAGE_TOKEN
    return torch.stack([cache[Site(t["layer"], "mlp_key")][b, where, t["neuron"]] for t in neurons])


def test_top_image_ranks_by_g_over_the_image_and_top_by_contribution_apart(lm):
    x = inputs(1)
    res = find_image_neurons(lm, x, config=NeuronConfig(top_k=3))
    d = lm.d_mlp
    image_flat = res.gradxact[0].flatten().topk(3).indices.tolist()
    assert [(t["layer"], t["neuron"]) for t in res.top_image[0]] == [divmod(i, d) for i in image_flat]
    contrib_flat = res.contribution[0].flatten().topk(3).indices.tolist()
    assert [(t["layer"], t["neuron"]) for t in res.top[0]] == [divmod(i, d) for i in contrib_flat]
    assert float(res.gradxact[0, -1].abs().max()) == 0.0  # a last-layer neuron at a patch cannot reach the word
    assert all(t["gradxact"] > 0 and t["layer"] < lm.n_layers - 1 for t in res.top_image[0])
    keys = image_keys(lm, x, 0, res.top_image[0])  # (3, 16)
    for j in range(3):
        torch.testing.assert_close(res.image_map(0, j), keys[j].view(SIDE, SIDE))
    summary = res.summary()
    assert "logit" in summary["gradient"] and "log-probability" in summary["gradient"]
    assert "image tokens" in summary["ranking"]["top_image"] and "predicting" in summary["ranking"]["top"]
    assert [t["neuron"] for t in summary["prompts"][0]["top_image"]] == [t["neuron"] for t in res.top_image[0]]
    assert res.prefixes == ["<bos> <image> The capital of"]  # the 16 image tokens shown once


def test_image_ranking_saves_and_reloads(lm, tmp_path):
    res = find_image_neurons(lm, inputs(1), config=NeuronConfig(top_k=2))
    back = load_result(res.save(tmp_path / "r"))
    assert back.top_image == res.top_image and torch.equal(back.image_acts, res.image_acts)
    assert back.prefixes == res.prefixes


def test_contribution_alone_has_no_image_ranking(lm):
    from lmscope.viz.neurons import patch_figure

    res = find_image_neurons(lm, inputs(1), config=NeuronConfig(top_k=2, method="contribution"))
    assert res.top_image == [] and "top_image" not in res.summary()["prompts"][0]
    with pytest.raises(KeyError, match="image-ranked"):
        res.image_map(0, 0)
    with pytest.raises(ConfigError, match="gradxact or both"):
        occlusion_check(lm, inputs(1), res)
    with pytest.raises(ConfigError, match="gradxact or both"):
        patch_figure(res, None)


def covered(pixels: torch.Tensor, tokens: list[int], fill: torch.Tensor) -> torch.Tensor:
    """(1, 3, 28, 28) with the 7 x 7 patches of ``tokens`` (row-major over the 4 x 4 grid) set to ``fill``."""
    out = pixels.clone()
    for t in tokens:
        r, c = divmod(t, SIDE)
        out[..., r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = fill
    return out


@torch.no_grad()
def direct_prob(lm, x: dict, b: int, pixels: torch.Tensor, target: int) -> float:
    """P(target) after row ``b``'s real tokens, with ``pixels`` (1, 3, 28, 28), straight from the bare model."""
    n = int(x["attention_mask"][b].sum())
    logits = lm.model(input_ids=x["input_ids"][b:b + 1, :n], pixel_values=pixels).logits  # (1, n, vocab)
    return float(logits[0, -1].softmax(-1)[target])


@pytest.mark.parametrize("fill", ["mean", "zero"])
def test_occlusion_numbers_are_the_direct_computation(lm, fill):
    x = padded_pair()
    res = find_image_neurons(lm, x, config=NeuronConfig(top_k=3))
    config = OcclusionConfig(maps=2, patches=3, draws=4, seed=7, fill=fill)
    occ = occlusion_check(lm, x, res, b=1, config=config)
    target, pixels = res.target_ids[1], x["pixel_values"][1:2]  # (1, 3, 28, 28)
    colour = pixels.mean((-2, -1), keepdim=True) if fill == "mean" else torch.zeros(1, 3, 1, 1)
    assert occ.prob == pytest.approx(direct_prob(lm, x, 1, pixels, target), rel=1e-4)
    assert occ.prob == pytest.approx(res.target_prob[1], rel=1e-4)  # the padded batch's P(word)
    brightest = image_keys(lm, x, 1, res.top_image[1][:2]).topk(3, -1).indices.tolist()  # (2, 3)
    assert [sorted(c) for c in occ.covered] == [sorted(c) for c in brightest]
    for tokens, p in zip(brightest, occ.prob_top):
        assert p == pytest.approx(direct_prob(lm, x, 1, covered(pixels, tokens, colour), target), rel=1e-4)
    gen = torch.Generator().manual_seed(7)
    for p in occ.prob_random:
        tokens = torch.randperm(16, generator=gen)[:3].tolist()
        assert p == pytest.approx(direct_prob(lm, x, 1, covered(pixels, tokens, colour), target), rel=1e-4)
    blank = colour.expand_as(pixels)
    assert occ.prob_blank == pytest.approx(direct_prob(lm, x, 1, blank, target), rel=1e-4)
    assert len(occ.prob_random) == 4 and occ.neurons == [[t["layer"], t["neuron"]] for t in res.top_image[1][:2]]
    s = occ.summary()
    assert s["random_drop"] == pytest.approx(occ.prob - sum(occ.prob_random) / 4)
    assert [m["drop"] for m in s["maps"]] == pytest.approx([occ.prob - p for p in occ.prob_top])
    assert [m["beats_random"] for m in s["maps"]] == [m["drop"] > s["random_drop"] for m in s["maps"]]


def test_covering_no_patch_changes_nothing(lm):
    x = inputs(1)
    res = find_image_neurons(lm, x, config=NeuronConfig(top_k=2))
    occ = occlusion_check(lm, x, res, config=OcclusionConfig(maps=2, patches=0, draws=2))
    assert occ.covered == [[], []] and occ.prob == pytest.approx(res.target_prob[0], rel=1e-5)
    assert occ.prob_top == pytest.approx([occ.prob] * 2, rel=1e-6)
    assert occ.prob_random == pytest.approx([occ.prob] * 2, rel=1e-6)
    assert occ.drops() == pytest.approx([0, 0], abs=1e-7)


def test_occlusion_defaults_and_bounds(lm, tmp_path):
    x = inputs(1)
    res = find_image_neurons(lm, x, config=NeuronConfig(top_k=2))
    occ = occlusion_check(lm, x, res, config=OcclusionConfig(maps=5, draws=2))
    assert occ.patches == 1 and len(occ.prob_top) == 2  # 5% of 16 patches, at least one; as many maps as there are
    back = load_result(occ.save(tmp_path / "o"))
    assert back.summary() == occ.summary()
    with pytest.raises(ConfigError, match="more than the 16 image tokens"):
        occlusion_check(lm, x, res, config=OcclusionConfig(patches=17))
    with pytest.raises(ConfigError, match="fill must be one of"):
        OcclusionConfig(fill="grey")
    with pytest.raises(ConfigError, match="draws"):
        OcclusionConfig(draws=0)
