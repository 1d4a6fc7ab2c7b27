"""Neurons of a vision-language model (LLaVA and kin) that write a caption's token (Schwettmann et al. 2023).

The image enters the decoder as a block of image tokens (``config.image_token_id``); lmscope finds them through that
mask, never at a fixed offset. Gradient x activation (of the word's logit, not its log-probability) sums over the
image tokens (Schwettmann's patches p), the forward contribution reads the position that predicts the token (Pan et
al.). Patch maps are the activations over the patches of the neurons ranked by the former (``top_image``): only
they have a path from a patch to the word. :func:`occlusion_check` checks a map by covering its brightest patches.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch

from lmscope.errors import ConfigError, InputError
from lmscope.methods.neurons.config import CaptionConfig, NeuronConfig, OcclusionConfig
from lmscope.methods.neurons.find import assemble, new_parts, score_chunk, scored_layers
from lmscope.methods.neurons.result import NeuronResult, OcclusionResult
from lmscope.methods.neurons.scores import OWN
from lmscope.model.lm import LM
from lmscope.model.tokens import pad
from lmscope.model.vlm_layouts import TokenLayout, coverage, image_token_layout, token_grid
from lmscope.model.vlm_layouts import image_token_id as config_image_token_id

log = logging.getLogger(__name__)


def image_token_id(lm: LM) -> int:
    """The id of the image placeholder token; :class:`InputError` for a model with no vision tower.

    Read from the config's ``image_token_id`` or ``image_token_index`` (LLaVA, LLaVA-NeXT, Idefics3, SmolVLM,
    Qwen2-VL, Qwen2.5-VL, Gemma 3, PaliGemma).
    """
    token = config_image_token_id(lm.model.config)
    if token is None:
        raise InputError(f"{lm.name} has no vision tower: an image needs a vision-language model (e.g. "
                         "--model smollm2-dino)")
    return token


def image_mask(lm: LM, input_ids: torch.Tensor) -> torch.Tensor:
    """(batch, pos) bool: the image tokens; every row must hold the same number of them."""
    mask = input_ids == image_token_id(lm)
    counts = mask.sum(1)
    if int(counts.min()) == 0:
        raise InputError("an input holds no image tokens: build it with the model's processor (the image goes where "
                         "the prompt says <image>)")
    if int(counts.max()) != int(counts.min()):
        raise InputError("every input of a batch must hold the same number of image tokens")
    return mask


def _grid(n: int, grid: tuple[int, int] | None, known: tuple[int, int] | None = None) -> list[int]:
    """[rows, cols] of the patch maps: ``grid``, else the family's token grid (``known``), else square, else 1 x n."""
    if grid is None and known is not None and known[0] * known[1] == n:
        return list(known)
    if grid is not None:
        if grid[0] * grid[1] != n:
            raise ConfigError(f"a {grid[0]} x {grid[1]} patch grid does not fit {n} image tokens")
        return list(grid)
    side = math.isqrt(n)
    return [side, side] if side * side == n else [1, n]


IMAGE_SHOWN = "<image>"  # one run of image tokens, as a prompt shown in a title or a page


def shown_prompt(lm: LM, ids: torch.Tensor, image: torch.Tensor) -> str:
    """The text of ``ids`` (pos,) with each run of image tokens (``image``, (pos,) bool) written once as <image>.

    Decoded whole (one image token kept per run), so the text around the image keeps its spacing.
    """
    first = image & ~torch.cat([image.new_zeros(1), image[:-1]])  # the first token of each run
    text = lm.tokenizer.decode(ids[~image | first], skip_special_tokens=False)
    if not bool(image.any()):
        return text
    token = lm.tokenizer.decode(ids[image][:1], skip_special_tokens=False)
    return text.replace(token, IMAGE_SHOWN) if token else text


def find_image_neurons(lm: LM, inputs: dict[str, torch.Tensor], targets: torch.Tensor | None = None,
                       config: NeuronConfig | None = None, texts: list[str] | None = None,
                       grid: tuple[int, int] | None = None) -> NeuronResult:
    """Score every MLP neuron for each row's target token (default: the model's own next token).

    ``inputs``: a processor's output (input_ids, attention_mask, pixel_values), one row per image + text,
    right-padded; the last real token of each row predicts its target. Gradient x activation (of the target's
    logit) sums over the image tokens. Two rankings, listed apart: ``result.top`` by the first method (forward
    contribution at the predicting position) and ``result.top_image`` by gradient x activation over the image
    tokens (method gradxact or both); ``result.image_map(b, j)`` is the j-th of the latter's activation over the
    patches: the patch map (``result.patch_map`` the same for ``top``). ``grid``: rows x cols; default: the
    family's token grid where its image tokens form one (LLaVA, PaliGemma, Gemma 3, Qwen2-VL), else square, else
    1 x n. For tiled families (LLaVA-NeXT, Idefics3, SmolVLM) map the activations back to the image with
    :func:`lmscope.model.vlm_layouts.paint`.
    """
    config = config or NeuronConfig()
    layers = scored_layers(lm, config)
    if config.top_k > len(layers) * lm.d_mlp:
        raise ConfigError(f"top-k {config.top_k} is larger than the {len(layers) * lm.d_mlp} neurons scored")
    inputs = {k: v.to(lm.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    mask = image_mask(lm, inputs["input_ids"])
    if targets is None:  # the model's own next tokens, read from the scoring pass
        targets = torch.full((inputs["input_ids"].shape[0],), OWN)
    parts = new_parts()
    score_chunk(lm, inputs, targets, layers, config, parts, mask, image=mask)
    real = inputs.get("attention_mask", torch.ones_like(inputs["input_ids"])).bool().cpu()  # (batch, pos)
    prefixes = [shown_prompt(lm, row[r], m[r]) for row, r, m in zip(inputs["input_ids"].cpu(), real, mask.cpu())]
    result = assemble(lm, texts or prefixes, layers, config, parts, [])
    result.grid = _grid(int(mask[0].sum()), grid, token_grid(lm, inputs) if grid is None else None)
    result.prefixes = prefixes
    return result


@torch.no_grad()
def occlusion_check(lm: LM, inputs: dict[str, torch.Tensor], result: NeuronResult, b: int = 0,
                    config: OcclusionConfig | None = None) -> OcclusionResult:
    """Check row ``b``'s patch maps by occlusion, against random patches and a blank image.

    Covering a map's brightest patches must lower P(word) more than covering as many random patches does
    (``config.draws`` seeded sets); P(word) on a blank image is the control of whether the word needs the image.

    ``inputs``: what ``result`` was scored on (:func:`find_image_neurons`); the maps are the first ``config.maps``
    neurons of ``result.top_image[b]``. Covering an image token fills the pixels of its box (see
    :func:`~lmscope.model.vlm_layouts.image_token_layout`) in ``pixel_values`` with ``config.fill``, so the vision
    tower sees the occluded image; one (channels, height, width) image a row (LLaVA, PaliGemma, Gemma 3).
    """
    config = config or OcclusionConfig()
    if not result.top_image:
        raise ConfigError("occlusion checks the maps of top_image: score with method gradxact or both")
    row = _row(inputs, b, lm.device)
    layout = _pixel_layout(lm, row)
    n = layout.frame.numel()
    k = config.patches if config.patches >= 0 else max(1, math.ceil(0.05 * n))
    if k > n:
        raise ConfigError(f"patches {k} is more than the {n} image tokens")
    covered = result.image_acts[b, : config.maps, :n].topk(k, -1).indices  # (maps, k) the brightest patches
    gen = torch.Generator().manual_seed(config.seed)
    draws = [torch.randperm(n, generator=gen)[:k] for _ in range(config.draws)]  # (k,) each
    pixels = row["pixel_values"]  # (1, channels, height, width)
    fill = _fill(pixels, config.fill)  # (1, channels, 1, 1)
    variants = [pixels, *(cover(pixels, layout, c, fill) for c in [*covered, *draws]), fill.expand_as(pixels)]
    probs = _probs(lm, row, torch.cat(variants), result.target_ids[b])
    m = len(covered)
    return OcclusionResult(model=lm.name, word=result.targets[b], target_id=result.target_ids[b],
                           neurons=[[t["layer"], t["neuron"]] for t in result.top_image[b][:m]], patches=k,
                           covered=covered.tolist(), prob=probs[0], prob_top=probs[1:1 + m],
                           prob_random=probs[1 + m:-1], prob_blank=probs[-1], config=config)


def cover(pixels: torch.Tensor, layout: TokenLayout, tokens: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """``pixels`` (1, channels, height, width) with the boxes of image tokens ``tokens`` (indices) set to ``fill``."""
    chosen = torch.zeros(layout.frame.numel())
    chosen[tokens.long()] = 1.0
    inside = coverage(layout, values=chosen)[1] > 0  # (height, width)
    return torch.where(inside.to(pixels.device), fill.to(pixels.dtype), pixels)


def _row(inputs: dict, b: int, device) -> dict[str, torch.Tensor]:
    """Row ``b`` of a right-padded batch, cut to its real tokens, on ``device``."""
    batch = inputs["input_ids"].shape[0]
    row = {k: v[b:b + 1].to(device) for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.shape[0] == batch}
    n = int(row["attention_mask"].sum()) if "attention_mask" in row else row["input_ids"].shape[1]
    return {k: v[:, :n] if k in ("input_ids", "attention_mask") else v for k, v in row.items()}


def _pixel_layout(lm: LM, row: dict) -> TokenLayout:
    """The image tokens' layout of one row whose ``pixel_values`` are one (1, channels, height, width) image."""
    layout = image_token_layout(lm, row)[0]
    pixels = row.get("pixel_values")
    if pixels is None or pixels.dim() != 4 or tuple(pixels.shape[-2:]) != tuple(layout.size) \
            or bool((layout.frame != 0).any()):
        raise InputError("occlusion covers the pixels of one (channels, height, width) image a row (LLaVA, "
                         f"PaliGemma, Gemma 3); {lm.model.config.model_type} inputs are tiled or flattened")
    return layout


def _fill(pixels: torch.Tensor, how: str) -> torch.Tensor:
    """(1, channels, 1, 1): the image's mean colour ("mean") or the processor's normalisation mean ("zero": 0)."""
    mean = pixels.mean((-2, -1), keepdim=True)
    return mean if how == "mean" else torch.zeros_like(mean)


def _probs(lm: LM, row: dict, pixels: torch.Tensor, target: int, chunk: int = 8) -> list[float]:
    """P(target) at the last token of ``row``'s text with each image of ``pixels`` (variants, channels, h, w)."""
    out = []
    for start in range(0, len(pixels), chunk):
        part = pixels[start:start + chunk]
        x = {k: v.expand(len(part), *v.shape[1:]) for k, v in row.items() if k != "pixel_values"}
        logits = lm({**x, "pixel_values": part})  # (variants, pos, vocab)
        out += logits[:, -1].float().softmax(-1)[:, target].tolist()
    return out


STOPWORDS = frozenset("a an the of with and in on at to for from by is are was were it its this that picture "
                      "image photo".split())


def word_tokens(decode: Callable[[list[int]], str], new: list[int], j: int, word: str) -> int:
    """How many of the caption's tokens ``new[j:]`` spell ``word`` (the word that starts at token ``j``)."""
    n = 1
    while j + n < len(new) and len(decode(new[j:j + n]).strip().strip(".,")) < len(word):
        n += 1
    return n


@torch.no_grad()
def caption_targets(lm: LM, image, prompt: str, max_new_tokens: int = 8,
                    notes: list[str] | None = None) -> tuple[str, dict, torch.Tensor, list[str]]:
    """Caption ``image`` greedily, then one row per content word of the caption (its first token the target).

    Returns (caption, inputs: image + prompt + the caption up to the word, right-padded, target ids (rows,),
    the words). Content words: alphabetic words not in :data:`STOPWORDS` (Schwettmann et al. score the caption's
    nouns; lmscope has no tagger offline, so every content word is scored). A word of several tokens is scored by
    its first: a logged warning, also appended to ``notes``, says so.
    """
    max_new_tokens = CaptionConfig(caption_tokens=max_new_tokens).caption_tokens  # its bounds, checked
    if lm.processor is None:
        image_token_id(lm)  # raises the no-vision-tower error
    x = lm.processor(images=image, text=prompt, return_tensors="pt")
    x = {k: v.to(lm.device) for k, v in x.items()}
    out = lm.model.generate(**x, max_new_tokens=max_new_tokens, do_sample=False,
                            pad_token_id=lm.tokenizer.eos_token_id)
    new = out[0, x["input_ids"].shape[1]:].tolist()
    caption = lm.tokenizer.decode(new, skip_special_tokens=True).split(".")[0].split("\n")[0]
    rows, targets, words = [], [], []

    def decode(ids: list[int]) -> str:
        return lm.tokenizer.decode(ids, skip_special_tokens=True)

    for j in range(len(new)):
        before, upto = decode(new[:j]), decode(new[:j + 1])
        if len(before.strip()) >= len(caption.strip()):
            break
        word = upto[len(before):].strip().lower()
        starts = j == 0 or upto.startswith(before + " ") or upto[len(before):].startswith(" ")
        if starts and word.isalpha() and word not in STOPWORDS:
            rows.append(torch.cat([x["input_ids"][0], torch.tensor(new[:j], device=lm.device)]))
            targets.append(new[j])
            words.append(decode(new[j:]).split()[0].strip(".,"))
            n = word_tokens(decode, new, j, words[-1])
            if n > 1:
                note = (f"caption word {words[-1]!r} is {n} tokens; scoring its first, "
                        f"{lm.to_str_tokens(new[j:j + 1])[0]!r}")
                log.warning(note)
                if notes is not None:
                    notes.append(note)
    if not rows:
        raise InputError(f"the caption {caption!r} has no content word to score")
    ids, mask = pad([r.tolist() for r in rows], lm.device, pad_id=lm.tokenizer.eos_token_id)
    batch = {"input_ids": ids, "attention_mask": mask,
             "pixel_values": x["pixel_values"].expand(len(rows), *x["pixel_values"].shape[1:])}
    return caption.strip(), batch, torch.tensor(targets), words
