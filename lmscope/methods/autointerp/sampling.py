"""Excerpts for every unit of a layer from one pass over the corpus, split between explainer and scorer.

Activations at special positions, at each excerpt's first position (BOS or attention sink) and at attention-sink
positions read as 0, as in SAE training. A unit's
excerpts are ranked by their largest activation; the top ones alternate between the explainer (ranks 0, 2, 4, ...)
and the scorer (ranks 1, 3, 5, ...), and the scorer also gets random excerpts that neither side used for that unit
(and, optionally, one active excerpt from each activation-quantile bin), so no excerpt that explains a unit scores
it.

The corpus must give at least one excerpt (else a :class:`DataError`), and the model's activations must be finite
(else an :class:`ArtifactError` naming the site or unit); a unit's activations are kept in float16 unless they
reach beyond its range, then in float32 (never turned into infinity).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lmscope.data.activations import activation_batches, corpus_batches, run_batch
from lmscope.errors import ArtifactError, DataError, RunError
from lmscope.io import load_tensors, save_tensors
from lmscope.methods.autointerp.config import SampleConfig
from lmscope.model.lm import LM
from lmscope.model.sites import Site
from lmscope.model.units import Units
from lmscope.progress import tqdm

HALF_MAX = float(torch.finfo(torch.float16).max)


def _stop(sites: list[Site]) -> Site:
    return Site(max(s.layer for s in sites), "resid_post")


def _no_text(cfg: SampleConfig) -> DataError:
    return DataError(f"the corpus {cfg.corpus} (split {cfg.split}) gives no excerpt of {cfg.seq_len} tokens: it is "
                     "empty or too short (choose another corpus or split, or a smaller --seq-len)")


def _not_finite(what: str) -> ArtifactError:
    return ArtifactError(f"{what} is not finite on the corpus: the weights that give it (the model's or the SAE's) "
                         "hold NaN or infinity, or the dtype overflows (run in float32)")


@torch.no_grad()
def fit_activations(lm: LM, sites: list[Site], cfg: SampleConfig) -> dict[Site, torch.Tensor]:
    """Activations (n, d) at each site over ``fit_tokens`` kept positions (to choose units and fit directions)."""
    parts: dict[Site, list[torch.Tensor]] = {s: [] for s in sites}
    for batch in activation_batches(lm, sites, cfg, tokens=cfg.fit_tokens, stop_after=_stop(sites)):
        for s in sites:
            parts[s].append(batch.kept(s))
    if not all(parts.values()):
        raise _no_text(cfg)
    fit = {s: torch.cat(v) for s, v in parts.items()}
    for s, x in fit.items():
        if not x.shape[0]:
            raise DataError(f"the corpus {cfg.corpus} leaves no position to read at {s}: every position is left out "
                            "(see --drop-first, --drop-special, --sink-factor)")
        if not bool(torch.isfinite(x).all()):
            raise _not_finite(f"the activation at {s}")
    return fit


@dataclass
class Excerpts:
    """Every excerpt read, and each unit set's activations on it."""

    ids: torch.Tensor  # (rows, seq_len)
    acts: dict[str, torch.Tensor]  # unit set name -> (rows, seq_len, units) on CPU, float16 (float32 when beyond it)


@torch.no_grad()
def collect(lm: LM, sets: list[Units], cfg: SampleConfig) -> Excerpts:
    """One pass over ``cfg.tokens`` tokens reading every unit of every set."""
    rows, acts = [], {u.name: [] for u in sets}
    for ids in tqdm(list(corpus_batches(lm.tokenizer, cfg)), desc="autointerp excerpts", unit="batch"):
        for name, a in read_units(lm, sets, ids, cfg).items():
            acts[name].append(a)
        rows.append(ids.cpu())
    if not rows:
        raise _no_text(cfg)
    return Excerpts(torch.cat(rows), {k: torch.cat(v) for k, v in acts.items()})


def read_units(lm: LM, sets: list[Units], ids: torch.Tensor, cfg: SampleConfig) -> dict[str, torch.Tensor]:
    """Every set's activations (batch, seq, units) on one batch of token rows, left-out positions 0, on the CPU."""
    sites = sorted({u.site for u in sets}, key=str)
    batch = run_batch(lm, ids, sites, cfg, _stop(sites))
    keep = batch.keep if batch.keep is not None else torch.ones_like(batch.ids, dtype=torch.bool)
    out = {}
    for u in sets:
        x = batch.acts[u.site].float()  # (batch, seq, d)
        a = u.encode(x.flatten(0, 1)).view(*x.shape[:2], -1) * keep[..., None]
        bad = (~torch.isfinite(a)).flatten(0, 1).any(0).nonzero().flatten().tolist()
        if bad:
            raise _not_finite(f"the activation of unit {u.name}:{u.unit_ids[bad[0]]}")
        big = bool(a.abs().max() > HALF_MAX) if a.numel() else False
        out[u.name] = a.cpu() if big else a.half().cpu()  # torch.cat promotes to float32
    return out


def save_excerpts(path: Path, data: Excerpts, sets: list[Units]) -> None:
    """Write the excerpts and the unit ids they were read for (one safetensors file, atomically)."""
    tensors = {"ids": data.ids, **{f"acts.{u.name}": data.acts[u.name] for u in sets},
               **{f"units.{u.name}": torch.tensor(u.unit_ids, dtype=torch.long) for u in sets}}
    save_tensors(path, tensors)


@torch.no_grad()
def saved_excerpts(lm: LM, sets: list[Units], cfg: SampleConfig, path: Path) -> Excerpts:
    """The excerpts :func:`save_excerpts` wrote, checked against what the model reads now.

    The same units must be asked for, the corpus must give the same first rows, and the units' activations on them,
    read again, must match the saved ones (to float16 precision): a changed model, SAE or corpus is a
    :class:`RunError`, never a silent mix of two runs' excerpts.
    """
    saved = load_tensors(path)
    names = {u.name: u for u in sets}
    if "ids" not in saved or any(k.startswith("acts.") and f"units.{k[5:]}" not in saved for k in saved):
        raise ArtifactError(f"{path} is not a file of autointerp excerpts (it lacks their token ids or unit ids); "
                            "remove it and the records to start over")
    if set(names) != {k.split(".", 1)[1] for k in saved if k.startswith("acts.")} or any(
            saved[f"units.{n}"].tolist() != list(u.unit_ids) for n, u in names.items()):
        raise _changed(path, "other units (the SAE, or the activations its features are sampled on)")
    ids = saved["ids"]
    first = next(iter(corpus_batches(lm.tokenizer, cfg)), None)
    if first is None or not torch.equal(first.cpu(), ids[: first.shape[0]]):
        raise _changed(path, "other text (the corpus)")
    for name, now in read_units(lm, sets, first, cfg).items():
        was = saved[f"acts.{name}"][: first.shape[0]].float()
        scale = max(float(was.abs().max()), float(now.abs().max()), 1e-6)
        if float((now.float() - was).abs().max()) > 1e-2 * scale:
            raise _changed(path, f"other activations of the {name} units (the model's or the SAE's weights)")
    return Excerpts(ids, {n: saved[f"acts.{n}"] for n in names})


def _changed(path: Path, what: str) -> RunError:
    return RunError(f"{path} holds the excerpts this run read when it started, for {what} than now: resuming would "
                    f"mix two runs; use another --out, or remove {path.name} and the records to start over")


@dataclass
class UnitExamples:
    """One unit's excerpts (row indices) for explaining and for scoring."""

    explain: list[int]
    score_top: list[int]
    score_random: list[int]
    score_quantile: list[int]  # one active excerpt per activation-quantile bin (lowest bin first)
    random_pool: str = "any"  # "quiet": the random excerpts are among those that do not activate; "any": all


def split_examples(row_max: torch.Tensor, cfg: SampleConfig, gen: torch.Generator) -> UnitExamples:
    """Disjoint explain / score excerpts of one unit from its per-excerpt maxima (rows,)."""
    order = row_max.argsort(descending=True)
    active = order[row_max[order] > 0][: 2 * max(cfg.explain_examples, cfg.score_top)]
    explain = active[0::2][: cfg.explain_examples].tolist()
    score_top = active[1::2][: cfg.score_top].tolist()
    used = set(explain) | set(score_top)
    quantile = _quantile_rows(row_max, used, cfg.score_quantiles, gen)
    used |= set(quantile)
    pick, pool = _random_rows(row_max, used, cfg, gen)
    return UnitExamples(explain, score_top, pick, quantile, pool)


def _random_rows(row_max: torch.Tensor, used: set[int], cfg: SampleConfig,
                 gen: torch.Generator) -> tuple[list[int], str]:
    """``cfg.score_random`` unused excerpts drawn among the quiet ones, or among all when too few are quiet.

    Quiet: the excerpt's peak is below ``cfg.quiet_below`` times the unit's top peak (delphi's non-activating
    contexts). A sparse unit has plenty; a dense direction (random, PCA) often does not, and then its random excerpts
    are uniform over the text, as in Bills et al.
    """
    rest = torch.tensor([r for r in range(row_max.numel()) if r not in used], dtype=torch.long)
    quiet = rest[row_max[rest] < cfg.quiet_below * float(row_max.max())] if rest.numel() else rest
    pool, name = (quiet, "quiet") if cfg.quiet_below > 0 and quiet.numel() >= cfg.score_random else (rest, "any")
    return pool[torch.randperm(pool.numel(), generator=gen)[: cfg.score_random]].tolist(), name


def _quantile_rows(row_max: torch.Tensor, used: set[int], bins: int, gen: torch.Generator) -> list[int]:
    """One unused active excerpt from each of ``bins`` equal-count bins of the active excerpts' maxima."""
    active = [r for r in (row_max > 0).nonzero().flatten().tolist() if r not in used]
    if not bins or not active:
        return []
    ordered = sorted(active, key=lambda r: float(row_max[r]))
    edges = [round(i * len(ordered) / bins) for i in range(bins + 1)]
    picks = []
    for lo, hi in zip(edges, edges[1:]):
        if hi > lo:
            picks.append(ordered[lo + int(torch.randint(hi - lo, (1,), generator=gen))])
    return picks
