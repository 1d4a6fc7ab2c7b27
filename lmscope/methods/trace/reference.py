"""ROME's causal-tracing procedure, re-implemented faithfully.

One forward batch of (1 clean + samples corrupted) rows per (token, layer, kind), restoring
``h[1:, t] = h[0, t]`` inside the batch (ROME's ``trace_with_patch``) and, for severed traces, re-injecting the
states of a first corrupted pass (``trace_with_repatch``).

It is slow on purpose: it is the oracle the fast :func:`lmscope.causal_trace` is tested against, and the baseline
of ``bench/bench_trace.py``. It uses the same noise draws as the fast trace.
"""

from __future__ import annotations

import torch

from lmscope.methods.trace.config import SITE_KIND, TraceConfig, window_layers
from lmscope.methods.trace.noise import noise_scale
from lmscope.methods.trace.prepare import prepare_runs
from lmscope.model.hooks import Op, apply, capture
from lmscope.model.lm import LM
from lmscope.model.sites import Site


def _from_row0(t: int) -> callable:
    def fn(x: torch.Tensor) -> torch.Tensor:  # (1 + samples, pos, d)
        x = x.clone()
        x[1:, t] = x[0, t]
        return x

    return fn


def _from_values(t: int, values: torch.Tensor) -> callable:
    def fn(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[1:, t] = values[1:, t]
        return x

    return fn


def _noise_rows(noise: torch.Tensor, span: tuple[int, int]) -> Op:
    def fn(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[1:, span[0]:span[1]] += noise.to(x.dtype)
        return x

    return apply(Site(0, "embed"), fn)


def _cell(lm: LM, ids: torch.Tensor, ops: list[Op], target: int) -> float:
    with lm.hooks(*ops):
        logits = lm.model(input_ids=ids, use_cache=False).logits
    return float(torch.softmax(logits[1:, -1].float(), -1).mean(0)[target])


def _severed_states(lm: LM, ids: torch.Tensor, corrupt: Op, site: str) -> list[torch.Tensor]:
    """ROME's first pass of trace_with_repatch: the corrupted run's states at every layer."""
    sites = [Site(j, site) for j in range(lm.n_layers)]
    with lm.hooks(corrupt, *(capture(s) for s in sites)) as cache:
        lm.model(input_ids=ids, use_cache=False)
    return [cache[s] for s in sites]


def _cell_ops(lm: LM, kind: str, t: int, layer: int, window: int, frozen: list | None, site: str | None):
    if kind == "hidden":
        ops = [apply(Site(layer, "resid_post"), _from_row0(t))]
        if frozen is not None:  # ROME freezes the kind at token t in every layer
            ops += [apply(Site(j, site), _from_values(t, frozen[j])) for j in range(lm.n_layers)]
        return ops
    return [apply(Site(j, SITE_KIND[kind]), _from_row0(t)) for j in window_layers(layer, window, lm.n_layers)]


@torch.no_grad()
def reference_trace(lm: LM, prompt: str, subject: str, target: str | None = None,
                    config: TraceConfig | None = None) -> dict[str, torch.Tensor]:
    """{kind: (pos, n_layers) P*_restored} computed cell by cell as ROME does (including tokens before the subject)."""
    config = config or TraceConfig()
    runs, _, _ = prepare_runs(lm, prompt, subject, target, config, noise_scale(lm, config))
    ids = runs.ids.expand(config.samples + 1, -1)
    corrupt = _noise_rows(runs.noise, runs.span)
    jobs = [(k, None) for k in config.kinds] + [("hidden", s) for s in config.sever]
    out = {}
    for kind, sever in jobs:
        site = SITE_KIND[sever] if sever else None
        frozen = _severed_states(lm, ids, corrupt, site) if sever else None
        scores = torch.zeros(ids.shape[1], lm.n_layers)
        for t in range(ids.shape[1]):
            for layer in range(lm.n_layers):
                ops = [corrupt, *_cell_ops(lm, kind, t, layer, config.window, frozen, site)]
                scores[t, layer] = _cell(lm, ids, ops, runs.target)
        out[f"hidden_sever_{sever}" if sever else kind] = scores
    return out
