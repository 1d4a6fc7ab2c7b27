"""Activation patching (exact) and attribution patching (its first-order estimate), over layers x positions x kinds.

Exact: the corrupted prompt is run once per cell with one activation taken from the clean run: a layer x position
grid for each stream kind (resid_pre, resid_post, attn_out, mlp_out), a layer x head grid for "heads" (one head's
output at every position, through the ``attn_heads`` site). Cells are batched: each row of a forward pass patches
its own cell. Attribution (Nanda 2023; Syed et al. 2023): one corrupted forward and backward pass give the gradient
g of the metric at every site, and each cell's estimate is sum_d (clean - corrupted) * g over the cell's
coordinates.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from lmscope.errors import InputError
from lmscope.methods.patching.config import Metric, PatchConfig, logit_diff, target_prob
from lmscope.methods.patching.result import PatchingResult
from lmscope.model.hooks import Op, apply, gradient_taps
from lmscope.model.lm import LM
from lmscope.model.sites import Site
from lmscope.model.tokens import target_ids
from lmscope.progress import tqdm

log = logging.getLogger(__name__)

SITE_KIND = {"resid_pre": "resid_pre", "resid_post": "resid_post", "attn_out": "attn_out", "mlp_out": "mlp_out",
             "heads": "attn_heads"}
Cell = tuple[str, int, int]  # (kind, layer, position or head)


def prompt_pair(lm: LM, clean: str | torch.Tensor, corrupted: str | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (1, pos) of both prompts; they must have the same number of tokens."""
    ids = [lm.tokenize(p)["input_ids"] if isinstance(p, str) else p.to(lm.device).reshape(1, -1)
           for p in (clean, corrupted)]
    if ids[0].shape != ids[1].shape:
        raise InputError(f"the clean and corrupted prompts must have the same number of tokens for patching "
                         f"({ids[0].shape[1]} vs {ids[1].shape[1]}); choose a corruption of the same length")
    if torch.equal(ids[0], ids[1]):
        raise InputError("the clean and corrupted prompts have the same tokens: patching one into the other changes "
                         "nothing; corrupt the clean prompt, e.g. replace its subject")
    return ids[0], ids[1]


def _first_token(lm: LM, text: str, flag: str) -> int:
    """The first token of an answer; a warning says so when the answer has more."""
    ids = target_ids(lm, text)
    if len(ids) > 1:
        log.warning("%s %r is %d tokens; patching reads its first, %r", flag, text, len(ids),
                    lm.to_str_tokens(ids[:1])[0])
    return ids[0]


def answer_metric(lm: LM, answer: str, wrong: str | None = None) -> Metric:
    """logit(answer) - logit(wrong) at the last position, or P(answer) without ``wrong`` (first tokens, warned).

    Two answers with the same first token are refused: their logit difference is 0 on every run.
    """
    good = _first_token(lm, answer, "--answer")
    if wrong is None:
        return target_prob(good)
    bad = _first_token(lm, wrong, "--wrong")
    if good == bad:
        raise InputError(f"--answer {answer!r} and --wrong {wrong!r} have the same first token, "
                         f"{lm.to_str_tokens([good])[0]!r}: their logit difference is 0 on every run; give answers "
                         "whose first tokens differ")
    return logit_diff(good, bad)


def _check_gap(clean_m: float, corr_m: float) -> None:
    """The metric is finite on both prompts and tells them apart (the scores are normalised by the gap)."""
    for name, m in (("clean", clean_m), ("corrupted", corr_m)):
        if not math.isfinite(m):
            raise InputError(f"the metric on the {name} prompt is {m}: the model's logits are not finite there")
    if clean_m == corr_m:
        raise InputError(f"the metric is {clean_m:.6g} on both the clean and the corrupted prompt: there is no "
                         "effect to normalise by (every score would be 0); choose a corruption that changes it")


def _grid(lm: LM, config: PatchConfig, n_pos: int) -> tuple[list[int], list[int]]:
    layers = [lm.check(Site(layer, "resid_pre")).layer for layer in (config.layers or range(lm.n_layers))]
    positions = list(config.positions) or list(range(n_pos))
    bad = [p for p in positions if not -n_pos <= p < n_pos]
    if bad:
        raise InputError(f"positions {bad} are outside the prompt's {n_pos} tokens")
    return layers, [p % n_pos for p in positions]


def _cells(lm: LM, config: PatchConfig, layers: list[int], positions: list[int]) -> list[Cell]:
    cols = {k: range(lm.n_heads) if k == "heads" else positions for k in config.kinds}
    return [(k, layer, c) for k in config.kinds for layer in layers for c in cols[k]]


def _patch_ops(lm: LM, clean: dict, cells: list[Cell]) -> list[Op]:
    """One op per site: row r of the batch gets the clean value of its own cell."""
    by_site: dict[Site, list[tuple[int, int]]] = {}
    for row, (kind, layer, col) in enumerate(cells):
        by_site.setdefault(Site(layer, SITE_KIND[kind]), []).append((row, col))

    def patch(site: Site, pairs: list[tuple[int, int]]):
        rows, cols = (torch.tensor(v, device=lm.device) for v in zip(*pairs))
        source = clean[site][0]  # (pos, width)
        d = lm.d_head

        def fn(x: torch.Tensor) -> torch.Tensor:  # x: (batch, pos, width)
            x = x.clone()
            if site.kind != "attn_heads":
                x[rows, cols] = source[cols].to(x.dtype)
                return x
            for r, h in pairs:
                x[r, :, h * d:(h + 1) * d] = source[:, h * d:(h + 1) * d].to(x.dtype)
            return x
        return apply(site, fn)

    return [patch(site, pairs) for site, pairs in by_site.items()]


def _batches(items: list, size: int) -> Iterable[list]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _result(lm, clean_ids, corr_ids, clean_m, corr_m, raw, method, config) -> PatchingResult:
    result = PatchingResult(model=lm.name, clean=lm.tokenizer.decode(clean_ids[0]),
                            corrupted=lm.tokenizer.decode(corr_ids[0]), tokens=lm.to_str_tokens(corr_ids[0]),
                            clean_tokens=lm.to_str_tokens(clean_ids[0]), clean_metric=clean_m,
                            corrupted_metric=corr_m, scores={}, method=method, config=config)
    result.scores = {k: result.normalise(v) for k, v in raw.items()}
    return result


def _empty(lm: LM, config: PatchConfig, n_pos: int) -> dict[str, torch.Tensor]:
    return {k: torch.full((lm.n_layers, lm.n_heads if k == "heads" else n_pos), float("nan")) for k in config.kinds}


@dataclass
class _Setup:
    """What both patching methods start from: the two prompts, the grid, the sites and the clean run."""

    clean_ids: torch.Tensor  # (1, pos)
    corr_ids: torch.Tensor  # (1, pos)
    layers: list[int]
    positions: list[int]
    sites: list[Site]
    clean_logits: torch.Tensor  # (1, pos, vocab)
    clean_cache: dict


def _setup(lm: LM, clean, corrupted, config: PatchConfig) -> _Setup:
    clean_ids, corr_ids = prompt_pair(lm, clean, corrupted)
    layers, positions = _grid(lm, config, corr_ids.shape[1])
    sites = sorted({Site(layer, SITE_KIND[k]) for k in config.kinds for layer in layers}, key=str)
    clean_logits, cache = lm.run_with_cache(clean_ids, sites)
    return _Setup(clean_ids, corr_ids, layers, positions, sites, clean_logits, cache)


@torch.no_grad()
def activation_patching(lm: LM, clean: str | torch.Tensor, corrupted: str | torch.Tensor, metric: Metric,
                        config: PatchConfig | None = None) -> PatchingResult:
    """Patch each clean activation (cell) into the corrupted run and record the metric, normalised (0 / 1)."""
    config = config or PatchConfig()
    st = _setup(lm, clean, corrupted, config)
    clean_m, corr_m = float(metric(st.clean_logits)[0]), float(metric(lm(st.corr_ids))[0])
    _check_gap(clean_m, corr_m)
    raw = _empty(lm, config, st.corr_ids.shape[1])
    cells = _cells(lm, config, st.layers, st.positions)
    for chunk in tqdm(list(_batches(cells, config.batch_size)), desc="patching", unit="batch", leave=False):
        with lm.hooks(*_patch_ops(lm, st.clean_cache, chunk)):
            values = metric(lm(st.corr_ids.expand(len(chunk), -1))).float().cpu()
        for (kind, layer, col), v in zip(chunk, values):
            raw[kind][layer, col] = v
    return _result(lm, st.clean_ids, st.corr_ids, clean_m, corr_m, raw, "exact", config)


def attribution_patching(lm: LM, clean: str | torch.Tensor, corrupted: str | torch.Tensor, metric: Metric,
                         config: PatchConfig | None = None) -> PatchingResult:
    """First-order estimate of :func:`activation_patching` from one forward and backward pass of the corrupted run."""
    config = config or PatchConfig()
    st = _setup(lm, clean, corrupted, config)
    clean_ids, corr_ids, positions, sites, clean_cache = st.clean_ids, st.corr_ids, st.positions, st.sites, \
        st.clean_cache
    taps: dict[Site, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.enable_grad(), lm.hooks(*gradient_taps(sites, taps)):
        corr_m = metric(lm(corr_ids))[0]
        grads = torch.autograd.grad(corr_m, [taps[s][1] for s in sites])
    corr_m = float(corr_m.detach())
    clean_m = float(metric(st.clean_logits)[0])
    _check_gap(clean_m, corr_m)
    raw = _empty(lm, config, corr_ids.shape[1])
    d = lm.d_head
    for site, grad in zip(sites, grads):
        kind = next(k for k in config.kinds if SITE_KIND[k] == site.kind)
        delta = (clean_cache[site][0] - taps[site][0][0]).float() * grad[0].float()  # (pos, width)
        if kind == "heads":
            raw[kind][site.layer] = delta.sum(0).reshape(lm.n_heads, d).sum(-1).cpu()
        else:
            raw[kind][site.layer, positions] = delta.sum(-1)[positions].cpu()
    for v in raw.values():  # the estimate is of m_patched - m_corrupted
        v += corr_m
    return _result(lm, clean_ids, corr_ids, clean_m, corr_m, raw, "attribution", config)
