"""The two runs every trace reads: the clean run and the corrupted run, with their states cached.

:func:`prepare_runs` tokenises the prompt, finds the subject, resolves the target, draws the noise and runs the
clean prompt once and the corrupted prompt once (one row per noise sample), keeping every state a restoration may
need. The fast trace and ROME's reference procedure both start from it.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import torch

from lmscope.errors import InputError
from lmscope.methods.trace.config import SITE_KIND, TraceConfig
from lmscope.methods.trace.engine import Runs
from lmscope.methods.trace.noise import draw_noise, noise_op
from lmscope.model.hooks import Op, capture
from lmscope.model.kv import last_logits
from lmscope.model.lm import LM
from lmscope.model.sites import Site
from lmscope.model.tokens import subject_span, target_ids

log = logging.getLogger(__name__)


class Target(NamedTuple):
    """The traced token: its id, its text, and notes for the result (e.g. a multi-token target)."""

    id: int
    text: str
    notes: list[str]


def prompt_ids(lm: LM, prompt: str, subject: str) -> tuple[torch.Tensor, tuple[int, int]]:
    """Token ids (1, pos) of the prompt and the [start, end) token span of the subject's first occurrence."""
    ids, span = subject_span(lm, prompt, subject)
    return torch.tensor([ids], device=lm.device), span


def resolve_target(lm: LM, clean_logits: torch.Tensor, target: str | None) -> Target:
    """The target's first token (default: the model's own top-1 next token, from ``clean_logits`` (vocab,))."""
    if target is None:
        tid = int(clean_logits.argmax())
        return Target(tid, lm.to_str_tokens([tid])[0], [])
    if not target:
        raise InputError("empty target: give the answer's text (e.g. ' Paris'), or none for the model's top-1")
    ids = target_ids(lm, target)
    first = lm.to_str_tokens(ids[:1])[0]
    notes = []
    if len(ids) > 1:
        notes.append(f"target {target!r} is {len(ids)} tokens; tracing its first token {first!r}")
        log.warning(notes[-1])
    return Target(ids[0], first, notes)


def last_probs(lm: LM, ids: torch.Tensor, ops: list[Op], target: int) -> torch.Tensor:
    """P[target] at the last position for every row, under the given ops: (rows,)."""
    with lm.hooks(*ops):
        return torch.softmax(last_logits(lm, ids, use_cache=False).logits[:, -1].float(), -1)[:, target]


def run_states(lm: LM, ids: torch.Tensor, ops: list[Op], kinds: set[str]) -> tuple[torch.Tensor, dict]:
    """Logits at the last position and {site kind: (n_layers, rows, pos, d), "embed": (rows, pos, d)} of one run."""
    sites = [Site(layer, k) for k in kinds for layer in range(lm.n_layers)] + [Site(0, "embed")]
    with lm.hooks(*ops, *(capture(s) for s in sites)) as cache:
        logits = last_logits(lm, ids, use_cache=False).logits[:, -1]
    states = {k: torch.stack([cache[Site(layer, k)] for layer in range(lm.n_layers)]) for k in kinds}
    return logits, {**states, "embed": cache[Site(0, "embed")]}


def prepare_runs(lm: LM, prompt: str, subject: str, target: str | None, config: TraceConfig,
                 scale: float) -> tuple[Runs, float, Target]:
    """(the cached runs, P[target] of the clean run, the target) for one prompt."""
    ids, span = prompt_ids(lm, prompt, subject)
    kinds = {"resid_post"} | {SITE_KIND[k] for k in config.kinds} | {SITE_KIND[k] for k in config.sever}
    clean_logits, clean = run_states(lm, ids, [], kinds)
    tgt = resolve_target(lm, clean_logits[0], target)
    noise = draw_noise(config, span[1] - span[0], lm.d_model, scale).to(lm.device, lm.dtype)
    corrupt_logits, corrupt = run_states(lm, ids.expand(config.samples, -1), [noise_op(noise, span)], kinds)
    p_clean = float(torch.softmax(clean_logits.float(), -1)[0, tgt.id])
    p_corrupt = float(torch.softmax(corrupt_logits.float(), -1)[:, tgt.id].mean())
    return Runs(ids, span, tgt.id, clean, corrupt, noise, p_corrupt), p_clean, tgt
