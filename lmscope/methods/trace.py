"""Causal tracing (Meng et al. 2022, ROME §2; SPEC §1).

Corrupt the subject's input embeddings with Gaussian noise, then restore one clean state at a time (a hidden state
h_i^l, or the MLP / attention outputs of a window of layers at token i) and read P*_restored[target].

The reference procedure runs one batch of (1 clean + samples corrupted) rows per (token, layer, kind). Here the
clean and corrupted runs are done once and cached, and each layer's restorations for every token and noise sample
share one batch that starts from the cached corrupted residual stream above the layers that cannot change
(:func:`lmscope.model.surgery.start_after`), reading logits at the last position only. Restorations at tokens
before the subject cannot change anything and are filled with P* directly. :mod:`lmscope.methods.trace_reference`
keeps the one-batch-per-cell procedure; the tests check that both give the same numbers.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field

import torch

from lmscope.io import Result
from lmscope.model.hooks import Op, add, apply, capture, replace
from lmscope.model.lm import LM, InputError, check_prompt
from lmscope.model.sites import Site
from lmscope.model.surgery import start_after

log = logging.getLogger(__name__)

TRACE_KINDS = ("hidden", "mlp", "attn")
SITE_KIND = {"hidden": "resid_post", "mlp": "mlp_out", "attn": "attn_out"}


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


def window_layers(layer: int, window: int, n_layers: int) -> range:
    """ROME's window: layers [layer - window//2, layer + ceil(window/2)), clipped at both ends."""
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


# ---- the two cached runs ---------------------------------------------------------------------------------------
def _keeps_logits(model: torch.nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _last_logits(lm: LM, ids: torch.Tensor) -> torch.Tensor:
    """Logits at the last position (rows, vocab), computing the unembedding only there when the model allows."""
    if _keeps_logits(lm.model):
        return lm.model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[:, -1]
    return lm.model(input_ids=ids, use_cache=False).logits[:, -1]


def _probs(lm: LM, ids: torch.Tensor, ops: list[Op], target: int) -> torch.Tensor:
    """P[target] at the last position for every row, under the given ops: (rows,)."""
    with lm.hooks(*ops):
        return torch.softmax(_last_logits(lm, ids).float(), -1)[:, target]


def _states(lm: LM, ids: torch.Tensor, ops: list[Op], kinds: set[str]) -> tuple[torch.Tensor, dict]:
    """Logits at the last position and {site kind: (n_layers, rows, pos, d)} for one run."""
    sites = [Site(layer, k) for k in kinds for layer in range(lm.n_layers)]
    with lm.hooks(*ops, *(capture(s) for s in sites)) as cache:
        logits = _last_logits(lm, ids)
    return logits, {k: torch.stack([cache[Site(layer, k)] for layer in range(lm.n_layers)]) for k in kinds}


def noise_op(noise: torch.Tensor, span: tuple[int, int]) -> Op:
    """Add ``noise`` (rows, n_subject, d) to the embeddings of the subject tokens."""
    return add(Site(0, "embed"), noise, positions=slice(*span))


# ---- the fast trace ---------------------------------------------------------------------------------------------
@dataclass
class _Runs:
    """Everything the restorations read: ids, span, target, clean and corrupted states, noise."""

    ids: torch.Tensor  # (1, pos)
    span: tuple[int, int]
    target: int
    clean: dict  # site kind -> (n_layers, 1, pos, d)
    corrupt: dict  # site kind -> (n_layers, samples, pos, d)
    noise: torch.Tensor  # (samples, n_subject, d)
    p_corrupt: float


def _row_index(positions: list[int], samples: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows are (position, sample) pairs, position-major: (row -> position, row -> sample)."""
    pos = torch.tensor(positions, device=device).repeat_interleave(samples)
    smp = torch.arange(samples, device=device).repeat(len(positions))
    return pos, smp


def _set_rows(values: torch.Tensor, pos: torch.Tensor, smp: torch.Tensor | None) -> callable:
    """fn(x) that sets x[r, pos[r]] = values[smp[r] or 0, pos[r]] (values: (1 or samples, pos, d))."""
    rows = torch.arange(len(pos), device=pos.device)

    def fn(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[rows, pos] = values[smp if smp is not None else 0, pos].to(x.dtype)
        return x

    return fn


def _restore_batch(lm: LM, runs: _Runs, kind: str, layer: int, positions: list[int], window: int,
                   sever: str | None) -> torch.Tensor:
    """P*_restored (len(positions),) for one kind at one layer, all positions and samples in one batch."""
    samples = runs.noise.shape[0]
    pos, smp = _row_index(positions, samples, lm.device)
    ids = runs.ids.expand(len(pos), -1)
    ops: list[Op] = []
    if kind == "hidden":
        start, restored = layer, runs.corrupt["resid_post"][layer][smp]  # (rows, pos, d), a copy
        restored[torch.arange(len(pos)), pos] = runs.clean["resid_post"][layer][0, pos]
        if sever:
            site = SITE_KIND[sever]
            ops += [apply(Site(j, site), _set_rows(runs.corrupt[site][j], pos, smp))
                    for j in range(layer + 1, lm.n_layers)]
    else:
        layers = window_layers(layer, window, lm.n_layers)
        start = layers[0] - 1
        restored = runs.corrupt["resid_post"][start][smp] if start >= 0 else None
        ops += [apply(Site(j, SITE_KIND[kind]), _set_rows(runs.clean[SITE_KIND[kind]][j], pos, None)) for j in layers]
    if restored is None:
        ops.insert(0, noise_op(runs.noise[smp], runs.span))
        probs = _probs(lm, ids, ops, runs.target)
    else:
        with start_after(lm, start, restored):
            probs = _probs(lm, ids, ops, runs.target)
    return probs.view(len(positions), samples).mean(1)


def _trace_kind(lm: LM, runs: _Runs, kind: str, config: TraceConfig, sever: str | None = None) -> torch.Tensor:
    """(pos, n_layers) P*_restored for one kind; tokens before the subject cannot change P*."""
    n_pos = runs.ids.shape[1]
    scores = torch.full((n_pos, lm.n_layers), runs.p_corrupt)
    positions = list(range(runs.span[0], n_pos))
    per_batch = max(1, config.batch_tokens // (n_pos * config.samples))
    for layer in range(lm.n_layers):
        for k in range(0, len(positions), per_batch):
            chunk = positions[k:k + per_batch]
            scores[chunk, layer] = _restore_batch(lm, runs, kind, layer, chunk, config.window, sever).cpu()
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
    runs = _Runs(ids, span, target_id, clean, corrupt, noise, p_corrupt)
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
    scores = {kind: _trace_kind(lm, runs, kind, config) for kind in config.kinds}
    for kind in config.sever:
        scores[f"hidden_sever_{kind}"] = _trace_kind(lm, runs, "hidden", config, sever=kind)
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
