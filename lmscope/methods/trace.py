"""Causal tracing (Meng et al. 2022, ROME §2; SPEC §1).

Corrupt the subject's input embeddings with Gaussian noise, then restore one clean state at a time (a hidden state
h_i^l, or the MLP / attention outputs of a window of layers at token i) and read P*_restored[target].

The reference procedure runs one batch of (1 clean + samples corrupted) rows per (token, layer, kind). Here the
clean and corrupted runs are done once and cached, and :mod:`lmscope.methods.trace_engine` runs the cells of one
token together: each row starts from the cached corrupted residual stream after the last block that cannot
change, the tokens before the restored one come from the corrupted run's KV cache, and logits are read at the
last position only. Restorations at tokens before the subject cannot change anything and are filled with P*
directly. :mod:`lmscope.methods.trace_reference` keeps the one-batch-per-cell procedure; the tests check that both
give the same numbers on every family.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from lmscope.io import Result
from lmscope.methods.trace_engine import MAX_LOGITS, SITE_KIND, Cell, Runs, plan, run_batch
from lmscope.methods.trace_engine import window_layers as window_layers
from lmscope.model.cache import last_logits, supports_prefix
from lmscope.model.hooks import Op, add, capture, replace
from lmscope.model.lm import LM, InputError, check_prompt
from lmscope.model.sites import Site

log = logging.getLogger(__name__)

TRACE_KINDS = ("hidden", "mlp", "attn")


class SubjectError(InputError):
    """The subject string does not occur in the prompt."""


@dataclass
class TraceConfig:
    """Options of causal tracing; the defaults are ROME's."""

    kinds: tuple[str, ...] = field(default=TRACE_KINDS, metadata={"help": "what to restore: hidden, mlp, attn"})
    samples: int = field(default=10, metadata={"help": "noise samples averaged per cell"})
    window: int = field(default=10, metadata={"help": "layers restored together for mlp / attn (centred, clipped)"})
    noise: float | None = field(default=None, metadata={
        "help": "noise scale; default: noise_factor x the model's embedding std (estimated once, cached)"})
    noise_factor: float = field(default=3.0, metadata={"help": "multiple of the embedding std used as noise scale"})
    uniform_noise: bool = field(default=False, metadata={
        "help": "uniform noise in [-scale, scale] instead of Gaussian"})
    sever: tuple[str, ...] = field(default=(), metadata={
        "help": "also trace hidden states with these kinds (mlp, attn) frozen at later layers (ROME Fig. 3)"})
    noise_seed: int = field(default=1, metadata={"help": "seed of the noise draws (the same draws for every cell)"})
    batch_tokens: int = field(default=4096, metadata={"help": "tokens per forward pass (speed / memory only)"})

    def __post_init__(self) -> None:
        self.kinds, self.sever = tuple(self.kinds), tuple(self.sever)
        bad = [k for k in self.kinds if k not in TRACE_KINDS] + [k for k in self.sever if k not in ("mlp", "attn")]
        if bad:
            raise ValueError(f"unknown trace kind {bad[0]!r}: kinds are {TRACE_KINDS}, sever takes mlp / attn")
        if self.samples < 1 or self.window < 1 or self.batch_tokens < 1:
            raise ValueError("samples, window and batch_tokens must be >= 1")
        if self.noise is not None and self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")


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


# ---- inputs --------------------------------------------------------------------------------------------------
def subject_range(lm: LM, prompt: str, subject: str) -> tuple[torch.Tensor, tuple[int, int]]:
    """Token ids (1, pos) of the prompt and the [start, end) token span covering the first occurrence of subject."""
    check_prompt(prompt)
    if not subject or not subject.strip():
        raise SubjectError("empty subject")
    enc = lm.tokenizer(prompt, return_tensors="pt", return_offsets_mapping=True)
    tokens = lm.to_str_tokens(enc["input_ids"][0])
    start = prompt.find(subject)
    if start < 0:
        raise SubjectError(f"subject {subject!r} is not in the prompt {prompt!r}; the prompt's tokens are {tokens}")
    end = start + len(subject)
    spans = enc["offset_mapping"][0].tolist()
    inside = [i for i, (a, b) in enumerate(spans) if b > a and a < end and b > start]
    if not inside:
        raise SubjectError(f"subject {subject!r} covers no token of {tokens}")
    return enc["input_ids"].to(lm.device), (inside[0], inside[-1] + 1)


def resolve_target(lm: LM, clean_logits: torch.Tensor, target: str | None) -> tuple[int, str, list[str]]:
    """(token id, token text, notes) of the target; default: the model's own top-1 next token."""
    if target is None:
        tid = int(clean_logits.argmax())
        return tid, lm.to_str_tokens([tid])[0], []
    if not target:
        raise InputError("empty target: give the answer's text (e.g. ' Paris'), or none for the model's top-1")
    ids = lm.tokenizer(target, add_special_tokens=False)["input_ids"]
    if not ids:
        raise InputError(f"target {target!r} has no tokens")
    first = lm.to_str_tokens(ids[:1])[0]
    notes = []
    if len(ids) > 1:
        notes.append(f"target {target!r} is {len(ids)} tokens; tracing its first token {first!r}")
        log.warning(notes[-1])
    return ids[0], first, notes


def draw_noise(config: TraceConfig, n_tokens: int, d_model: int, scale: float) -> torch.Tensor:
    """The seeded noise added to the subject embeddings: (samples, n_subject_tokens, d_model)."""
    gen = torch.Generator().manual_seed(config.noise_seed)
    shape = (config.samples, n_tokens, d_model)
    unit = torch.rand(shape, generator=gen) * 2 - 1 if config.uniform_noise else torch.randn(shape, generator=gen)
    return unit * scale


# ---- the two cached runs ---------------------------------------------------------------------------------------
def _probs(lm: LM, ids: torch.Tensor, ops: list[Op], target: int) -> torch.Tensor:
    """P[target] at the last position for every row, under the given ops: (rows,)."""
    with lm.hooks(*ops):
        return torch.softmax(last_logits(lm, ids, use_cache=False).logits[:, -1].float(), -1)[:, target]


def _states(lm: LM, ids: torch.Tensor, ops: list[Op], kinds: set[str]) -> tuple[torch.Tensor, dict]:
    """Logits at the last position and {site kind: (n_layers, rows, pos, d), "embed": (rows, pos, d)} of one run."""
    sites = [Site(layer, k) for k in kinds for layer in range(lm.n_layers)] + [Site(0, "embed")]
    with lm.hooks(*ops, *(capture(s) for s in sites)) as cache:
        logits = last_logits(lm, ids, use_cache=False).logits[:, -1]
    states = {k: torch.stack([cache[Site(layer, k)] for layer in range(lm.n_layers)]) for k in kinds}
    return logits, {**states, "embed": cache[Site(0, "embed")]}


def noise_op(noise: torch.Tensor, span: tuple[int, int]) -> Op:
    """Add ``noise`` (rows, n_subject, d) to the embeddings of the subject tokens."""
    return add(Site(0, "embed"), noise, positions=slice(*span))


# ---- the fast trace ---------------------------------------------------------------------------------------------
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
    for t0, group in tqdm(batches, desc="trace", unit="batch", leave=False, disable=len(batches) < 50):
        probs = run_batch(lm, runs, t0, group, config.window).cpu()
        for cell, p in zip(group, probs.tolist()):
            scores[key_of[cell]][cell.t, cell.layer] = p
    runs.prefixes.clear()
    return scores


def noise_scale(lm: LM, config: TraceConfig) -> float:
    """The configured noise, or noise_factor x the model's (cached) embedding std."""
    if config.noise is not None:
        return float(config.noise)
    from lmscope.methods.noise import embedding_std

    return config.noise_factor * embedding_std(lm)


def _prepare(lm: LM, prompt: str, subject: str, target: str | None, config: TraceConfig, scale: float):
    ids, span = subject_range(lm, prompt, subject)
    kinds = {"resid_post"} | {SITE_KIND[k] for k in config.kinds} | {SITE_KIND[k] for k in config.sever}
    clean_logits, clean = _states(lm, ids, [], kinds)
    target_id, target_text, notes = resolve_target(lm, clean_logits[0], target)
    noise = draw_noise(config, span[1] - span[0], lm.d_model, scale).to(lm.device, lm.dtype)
    ids_s = ids.expand(config.samples, -1)
    corrupt_logits, corrupt = _states(lm, ids_s, [noise_op(noise, span)], kinds)
    p_clean = float(torch.softmax(clean_logits.float(), -1)[0, target_id])
    p_corrupt = float(torch.softmax(corrupt_logits.float(), -1)[:, target_id].mean())
    runs = Runs(ids, span, target_id, clean, corrupt, noise, p_corrupt)
    return runs, p_clean, target_text, notes


@torch.no_grad()
def causal_trace(lm: LM, prompt: str, subject: str, target: str | None = None,
                 config: TraceConfig | None = None) -> TraceResult:
    """Trace which states carry the fact: P*_restored[target] for every token, layer and kind (SPEC §1).

    ``target``: the answer's text (its first token is traced); default: the model's own top-1 next token.
    Severed traces (``config.sever``) are stored under ``"hidden_sever_mlp"`` / ``"hidden_sever_attn"``.
    """
    config = config or TraceConfig()
    subject_range(lm, prompt, subject)  # bad input fails before any estimate or forward pass
    scale = noise_scale(lm, config)
    runs, p_clean, target_text, notes = _prepare(lm, prompt, subject, target, config, scale)
    scores = _trace_all(lm, runs, config)
    return TraceResult(
        model=lm.name, prompt=prompt, subject=subject, target=target_text, target_id=runs.target,
        tokens=lm.to_str_tokens(runs.ids[0]), subject_range=runs.span, clean_prob=p_clean,
        corrupted_prob=runs.p_corrupt, noise=scale, scores=scores, notes=notes, config=config,
    )


@torch.no_grad()
def restored_prob(lm: LM, prompt: str, subject: str, restore: dict[Site, list[int]], target: str | None = None,
                  config: TraceConfig | None = None) -> float:
    """P*[target] of the corrupted prompt with the clean values of ``restore`` (site -> token positions) put back.

    The building block of every trace cell, for arbitrary combinations of sites.
    """
    config = config or TraceConfig()
    ids, span = subject_range(lm, prompt, subject)
    clean_logits, cache = lm.run_with_cache(ids, list(restore))
    target_id = resolve_target(lm, clean_logits[0, -1], target)[0]
    noise = draw_noise(config, span[1] - span[0], lm.d_model, noise_scale(lm, config)).to(lm.device, lm.dtype)
    ops = [noise_op(noise, span)]
    ops += [replace(site, cache[site][:, list(pos)], positions=list(pos)) for site, pos in restore.items()]
    return float(_probs(lm, ids.expand(config.samples, -1), ops, target_id).mean())
