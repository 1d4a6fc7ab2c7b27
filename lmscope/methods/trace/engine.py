"""The batched restoration engine behind :func:`lmscope.causal_trace`.

A trace cell restores one clean state of the corrupted run: the hidden state at (token t, layer l), or the MLP /
attention outputs at token t over a window of layers. Two things are identical across cells and are not
recomputed here:

* every block below the first restored one gives the corrupted run's residual stream, so a cell starts from the
  cached corrupted residual after block ``start``;
* every token before t is untouched by a restoration at t, so its keys and values are those of the corrupted
  run: a cell runs only the positions from t on, with the corrupted prefix in the model's own KV cache.

All cells of one token run in one forward pass (chunked by ``batch_tokens``), one row per (cell, noise sample),
rows sorted by start layer; every block runs only on the rows that have started below it
(:func:`lmscope.model.surgery.staggered_start`). Models that cannot take a KV cache run every cell over the whole
prompt, which gives the same numbers.
"""

from __future__ import annotations

import bisect
import copy
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from lmscope.methods.trace.config import SITE_KIND, window_layers
from lmscope.model.hooks import Op, apply, replace
from lmscope.model.kv import cache_kwargs, last_logits, returned_cache
from lmscope.model.lm import LM
from lmscope.model.sites import Site
from lmscope.model.surgery import staggered_start

log = logging.getLogger(__name__)

MAX_LOGITS = 1 << 27  # rows x vocab of one batch's last-position logits (512 MiB in float32)


class Cell(NamedTuple):
    """One trace cell: restore ``kind`` (hidden, mlp, attn) at token ``t`` and ``layer``; ``sever``: mlp / attn."""

    kind: str
    layer: int
    t: int
    sever: str | None = None


@dataclass
class Runs:
    """Everything the restorations read: ids, span, target, clean and corrupted states, noise."""

    ids: torch.Tensor  # (1, pos)
    span: tuple[int, int]
    target: int
    clean: dict  # site kind -> (n_layers, 1, pos, d)
    corrupt: dict  # site kind -> (n_layers, samples, pos, d); "embed" -> (samples, pos, d)
    noise: torch.Tensor  # (samples, n_subject, d)
    p_corrupt: float
    prefixes: dict = field(default_factory=dict)  # t -> KV cache of the corrupted run's first t tokens, or None

    @property
    def samples(self) -> int:
        """Noise samples per cell."""
        return self.noise.shape[0]


def cell_start(cell: Cell, window: int, n_layers: int) -> int:
    """The block after which the cell first differs from the corrupted run (-1: from the embeddings)."""
    if cell.kind == "hidden":
        return cell.layer
    return window_layers(cell.layer, window, n_layers)[0] - 1


# ---- planning ---------------------------------------------------------------------------------------------------
def plan(cells: list[Cell], window: int, n_layers: int, n_pos: int, samples: int, max_tokens: int, max_rows: int,
         use_prefix: bool) -> list[tuple[int, list[Cell]]]:
    """Batches (t0, cells) of cells sorted by start layer, run over the prompt's positions t0.. .

    With a prefix cache t0 is the cells' token, else 0. A batch has at most ``max_tokens`` rows x positions and
    ``max_rows`` rows.
    """
    by_t0: dict[int, list[Cell]] = defaultdict(list)
    for cell in cells:
        by_t0[cell.t if use_prefix else 0].append(cell)
    batches = []
    for t0, group in sorted(by_t0.items()):
        group.sort(key=lambda c: cell_start(c, window, n_layers))
        per_batch = max(1, min(max_tokens // ((n_pos - t0) * samples), max_rows // samples))
        batches += [(t0, group[k:k + per_batch]) for k in range(0, len(group), per_batch)]
    return batches


# ---- the corrupted prefix ---------------------------------------------------------------------------------------
def prefix_cache(lm: LM, runs: Runs, t0: int):
    """The model's KV cache of the corrupted run's tokens [0, t0) for every noise sample, or None (t0 = 0)."""
    if t0 == 0:
        return None
    if t0 not in runs.prefixes:
        runs.prefixes.clear()  # batches come sorted by t0: one prefix is live at a time
        ids = runs.ids[:, :t0].expand(runs.samples, -1)
        with lm.hooks(replace(Site(0, "embed"), runs.corrupt["embed"][:, :t0])):
            runs.prefixes[t0] = returned_cache(last_logits(lm, ids, use_cache=True))
    return runs.prefixes[t0]


# ---- one batch --------------------------------------------------------------------------------------------------
class Patches:
    """Per site, the (row, position, value) writes of a batch, applied in one hook."""

    def __init__(self):
        self.writes: dict[Site, list[tuple[torch.Tensor, int, torch.Tensor]]] = defaultdict(list)

    def add(self, site: Site, rows: torch.Tensor, pos: int, values: torch.Tensor) -> None:
        self.writes[site].append((rows, pos, values))  # values: (d,) or (len(rows), d)

    def ops(self) -> list[Op]:
        return [apply(site, self._writer(w)) for site, w in self.writes.items()]

    @staticmethod
    def _writer(writes) -> callable:
        rows = torch.cat([r for r, _, _ in writes])
        pos = torch.cat([torch.full_like(r, p) for r, p, _ in writes])
        values = torch.cat([v.expand(len(r), -1) for r, _, v in writes])  # (n_rows, d)

        def fn(x: torch.Tensor) -> torch.Tensor:  # (batch, pos, d)
            x = x.clone()
            x[rows, pos] = values.to(x.dtype)
            return x

        return fn


def _cell_writes(lm: LM, runs: Runs, cells: list[Cell], t0: int, window: int, resid: torch.Tensor | None):
    """Put each cell's restorations into ``resid`` (hidden) or into per-site patches (mlp / attn / severed)."""
    patches, s = Patches(), runs.samples
    for c, cell in enumerate(cells):
        rows = torch.arange(c * s, (c + 1) * s, device=lm.device)
        p = cell.t - t0
        if cell.kind == "hidden":
            resid[rows, p] = runs.clean["resid_post"][cell.layer][0, cell.t]
            site = SITE_KIND.get(cell.sever)
            for j in range(cell.layer + 1, lm.n_layers) if site else ():
                patches.add(Site(j, site), rows, p, runs.corrupt[site][j][:, cell.t])
        else:
            site = SITE_KIND[cell.kind]
            for j in window_layers(cell.layer, window, lm.n_layers):
                patches.add(Site(j, site), rows, p, runs.clean[site][j][0, cell.t])
    return patches.ops()


def _rows_cache(lm: LM, runs: Runs, t0: int, smp: torch.Tensor, starts: list[int]):
    """A private copy of the prefix cache whose layer l holds the noise samples of the rows that run block l."""
    cache = prefix_cache(lm, runs, t0)
    if cache is None:
        return None
    cache = copy.deepcopy(cache)
    for layer, kv in enumerate(cache.layers):
        n_active = bisect.bisect_left(starts, layer)  # starts are sorted
        if n_active:  # layers no row runs keep their (unused) entries: the cache length is read from layer 0
            kv.batch_select_indices(smp[:n_active])
    return cache


@torch.no_grad()
def run_batch(lm: LM, runs: Runs, t0: int, cells: list[Cell], window: int) -> torch.Tensor:
    """P*_restored[target] of each cell (len(cells),): rows (cell, sample) sorted by start, positions t0.. ."""
    smp = torch.arange(runs.samples, device=lm.device).repeat(len(cells))  # row -> noise sample
    starts = [cell_start(c, window, lm.n_layers) for c in cells for _ in range(runs.samples)]
    layer = torch.tensor(starts, device=lm.device).clamp_min(0)
    resid = runs.corrupt["resid_post"][layer, smp, t0:]  # (rows, pos - t0, d): where each row starts, a copy
    ops = _cell_writes(lm, runs, cells, t0, window, resid)
    if starts[0] < 0:
        ops.insert(0, replace(Site(0, "embed"), runs.corrupt["embed"][smp, t0:]))
    kwargs = cache_kwargs(lm, _rows_cache(lm, runs, t0, smp, starts))
    ids = runs.ids[:, t0:].expand(len(smp), -1)
    with staggered_start(lm, starts, resid), lm.hooks(*ops):
        logits = last_logits(lm, ids, **kwargs).logits[:, -1].float()  # (rows, vocab)
    probs = torch.exp(logits[:, runs.target] - torch.logsumexp(logits, -1))  # softmax at the target only
    return probs.view(len(cells), runs.samples).mean(1)
