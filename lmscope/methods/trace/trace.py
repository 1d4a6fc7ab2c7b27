"""Causal tracing of one prompt (Meng et al. 2022, ROME §2): :func:`causal_trace` and its result.

Corrupt the subject's input embeddings with Gaussian noise, then restore one clean state at a time (a hidden state
h_i^l, or the MLP / attention outputs of a window of layers at token i) and read P*_restored[target].

The reference procedure runs one batch of (1 clean + samples corrupted) rows per (token, layer, kind). Here the
clean and corrupted runs are done once and cached (:mod:`.prepare`), and :mod:`.engine` runs the cells of one
token together: each row starts from the cached corrupted residual stream after the last block that cannot
change, the tokens before the restored one come from the corrupted run's KV cache, and logits are read at the
last position only. Restorations at tokens before the subject cannot change anything and are filled with P*
directly. :mod:`.reference` keeps the one-batch-per-cell procedure; the tests check that both give the same
numbers on every family.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmscope.io import Result
from lmscope.methods.trace.config import TraceConfig
from lmscope.methods.trace.engine import MAX_LOGITS, Cell, Runs, plan, run_batch
from lmscope.methods.trace.noise import draw_noise, noise_op, noise_scale
from lmscope.methods.trace.prepare import last_probs, prepare_runs, prompt_ids, resolve_target
from lmscope.model.hooks import replace
from lmscope.model.kv import supports_prefix
from lmscope.model.lm import LM
from lmscope.model.sites import Site
from lmscope.progress import listening_now, tqdm


@dataclass
class TraceResult(Result):
    """P*_restored[target] for every (token, layer) and kind of one prompt, with the clean and corrupted P."""

    model: str
    prompt: str
    subject: str
    target: str  # the traced target token as text
    target_id: int
    tokens: list[str]  # (pos,)
    subject_range: tuple[int, int]  # [start, end) token positions of the subject
    clean_prob: float  # P[target], clean run
    corrupted_prob: float  # P*[target], subject corrupted, nothing restored
    noise: float  # the noise scale used
    scores: dict[str, torch.Tensor]  # kind -> (pos, n_layers) P*_restored[target]
    notes: list[str] = field(default_factory=list)
    config: TraceConfig = field(default_factory=TraceConfig)

    def indirect_effect(self, kind: str) -> torch.Tensor:
        """IE = P*_restored - P* for one kind: (pos, n_layers)."""
        return self.scores[kind] - self.corrupted_prob

    @property
    def total_effect(self) -> float:
        """TE = P - P*."""
        return self.clean_prob - self.corrupted_prob

    def peaks(self) -> dict[str, dict]:
        """Per kind, the cell with the largest P*_restored: {"token", "position", "layer", "p"}."""
        out = {}
        for kind, scores in self.scores.items():
            pos, layer = divmod(int(scores.argmax()), scores.shape[1])
            out[kind] = {"position": pos, "token": self.tokens[pos], "layer": layer, "p": float(scores.max())}
        return out

    def summary(self) -> dict:
        """Prompt, subject, target, P and P*, the peak of every kind and the full score grids."""
        return {"model": self.model, "prompt": self.prompt, "subject": self.subject, "target": self.target,
                "tokens": self.tokens, "subject_range": list(self.subject_range), "clean_prob": self.clean_prob,
                "corrupted_prob": self.corrupted_prob, "noise": self.noise, "notes": self.notes,
                "peaks": self.peaks(), "scores": {k: v.tolist() for k, v in self.scores.items()}}


def _cells(config: TraceConfig, n_layers: int, positions: range) -> dict[str, list[Cell]]:
    """Every cell of the trace, per result key (kind, or hidden_sever_<kind>)."""
    jobs = {kind: (kind, None) for kind in config.kinds}
    jobs.update({f"hidden_sever_{kind}": ("hidden", kind) for kind in config.sever})
    return {key: [Cell(kind, layer, t, sever) for t in positions for layer in range(n_layers)]
            for key, (kind, sever) in jobs.items()}


def _trace_all(lm: LM, runs: Runs, config: TraceConfig) -> dict[str, torch.Tensor]:
    """{key: (pos, n_layers) P*_restored}; tokens before the subject cannot change P* and are not run."""
    n_pos = runs.ids.shape[1]
    cells = _cells(config, lm.n_layers, range(runs.span[0], n_pos))
    key_of = {cell: key for key, group in cells.items() for cell in group}
    scores = {key: torch.full((n_pos, lm.n_layers), runs.p_corrupt) for key in cells}
    batches = plan([c for group in cells.values() for c in group], config.window, lm.n_layers, n_pos,
                   config.samples, config.batch_tokens, MAX_LOGITS // lm.vocab_size, supports_prefix(lm))
    for t0, group in tqdm(batches, desc="trace", unit="batch", leave=False,
                          disable=len(batches) < 50 and not listening_now()):
        probs = run_batch(lm, runs, t0, group, config.window).cpu()
        for cell, p in zip(group, probs.tolist()):
            scores[key_of[cell]][cell.t, cell.layer] = p
    runs.prefixes.clear()
    return scores


@torch.no_grad()
def causal_trace(lm: LM, prompt: str, subject: str, target: str | None = None,
                 config: TraceConfig | None = None) -> TraceResult:
    """Trace which states carry the fact: P*_restored[target] for every token, layer and kind.

    ``target``: the answer's text (its first token is traced); default: the model's own top-1 next token.
    Severed traces (``config.sever``) are stored under ``"hidden_sever_mlp"`` / ``"hidden_sever_attn"``.
    """
    config = config or TraceConfig()
    prompt_ids(lm, prompt, subject)  # bad input fails before any estimate or forward pass
    scale = noise_scale(lm, config)
    runs, p_clean, tgt = prepare_runs(lm, prompt, subject, target, config, scale)
    scores = _trace_all(lm, runs, config)
    return TraceResult(
        model=lm.name, prompt=prompt, subject=subject, target=tgt.text, target_id=runs.target,
        tokens=lm.to_str_tokens(runs.ids[0]), subject_range=runs.span, clean_prob=p_clean,
        corrupted_prob=runs.p_corrupt, noise=scale, scores=scores, notes=tgt.notes, config=config,
    )


@torch.no_grad()
def restored_prob(lm: LM, prompt: str, subject: str, restore: dict[Site, list[int]], target: str | None = None,
                  config: TraceConfig | None = None) -> float:
    """P*[target] of the corrupted prompt with the clean values of ``restore`` (site -> token positions) put back.

    The building block of every trace cell, for arbitrary combinations of sites.
    """
    config = config or TraceConfig()
    ids, span = prompt_ids(lm, prompt, subject)
    clean_logits, cache = lm.run_with_cache(ids, list(restore))
    target_id = resolve_target(lm, clean_logits[0, -1], target).id
    noise = draw_noise(config, span[1] - span[0], lm.d_model, noise_scale(lm, config)).to(lm.device, lm.dtype)
    ops = [noise_op(noise, span)]
    ops += [replace(site, cache[site][:, list(pos)], positions=list(pos)) for site, pos in restore.items()]
    return float(last_probs(lm, ids.expand(config.samples, -1), ops, target_id).mean())
