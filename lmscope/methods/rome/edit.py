"""ROME rank-one editing (Meng et al. 2022, §3; SPEC §2), as ROME's code does it, in named steps.

1. :func:`context_prefixes`: the empty prefix and short texts sampled from the model itself.
2. :func:`compute_key`: k* = the MLP key (input of W_out) at the last subject token, averaged over the prefixes.
3. :func:`lmscope.methods.rome.value.compute_value`: v* = the W_out output there plus a vector delta, optimised
   so that the model says the new target (NLL), keeps its idea of what the subject is (KL on "{} is a"), with
   weight decay and a norm clamp.
4. :func:`rank_one_update`: W_out <- W_out + right u^T with u = C^-1 k* / |C^-1 k*| (C = E[k k^T]) and
   right = (v* - W_out k) / (u . k), k the key of the unprefixed prompt, so that the edited layer maps k to v*.

:func:`rome_edit` runs the four steps and applies the update; it returns an :class:`EditHandle` whose ``undo()``
restores the weights bit for bit. The edit itself (:class:`RomeEdit`: the two rank-one factors, the request and
the config) saves as cfg.json + safetensors and applies to a fresh copy of the model with :func:`apply_edit`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import torch

from lmscope.io import Result
from lmscope.model.hooks import capture
from lmscope.model.lm import LM, InputError
from lmscope.model.sites import ModuleSite, Site

log = logging.getLogger(__name__)


# ---- request and config ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EditRequest:
    """Rewrite ``prompt.replace("{}", subject)`` to continue with ``target`` (e.g. " Rome")."""

    prompt: str  # template with "{}" for the subject, e.g. "{} is located in the city of"
    subject: str
    target: str

    def __post_init__(self) -> None:
        if self.prompt.count("{}") != 1:
            hint = (f"; did you mean {self.prompt.replace(self.subject, '{}', 1)!r}?"
                    if self.subject and self.prompt.count("{}") == 0 and self.subject in self.prompt else "")
            raise InputError(f"prompt template {self.prompt!r} must contain '{{}}' exactly once (for the subject)"
                             + hint)
        if not self.subject.strip():
            raise InputError("empty subject")
        if not self.target.strip():
            raise InputError("empty target: give the new answer's text, e.g. ' Rome'")
        if not self.target.startswith(" ") and not self.prompt.endswith(" "):
            object.__setattr__(self, "target", " " + self.target)  # a continuation, as ROME does

    @property
    def text(self) -> str:
        """The rendered prompt."""
        return self.prompt.replace("{}", self.subject)


@dataclass
class RomeConfig:
    """Options of ROME; the defaults are the paper's (GPT-2 XL hyper-parameters)."""

    layer: int | str = field(default="auto", metadata={
        "help": "edit layer, or 'auto': the MLP AIE peak at the last subject token of the model's cached trace"})
    v_steps: int = field(default=20, metadata={"help": "optimisation steps for v*"})
    v_lr: float = field(default=0.5, metadata={"help": "Adam learning rate for v*"})
    v_weight_decay: float = field(default=0.5, metadata={"help": "weight decay on |delta| / |v0|^2"})
    kl_factor: float = field(default=0.0625, metadata={"help": "weight of the KL essence term on '{} is a'"})
    clamp_norm_factor: float = field(default=4.0, metadata={"help": "|delta| is clamped to this x |v0|"})
    early_stop_loss: float = field(default=0.05, metadata={"help": "stop optimising v* below this loss"})
    kl_prompt: str = field(default="{} is a", metadata={"help": "prompt of the essence (KL) term"})
    context_lengths: tuple[int, ...] = field(default=(5, 10), metadata={
        "help": "token lengths of the sampled context prefixes"})
    contexts_per_length: int = field(default=10, metadata={"help": "sampled prefixes per length"})
    context_seed: int = field(default=0, metadata={"help": "seed of the prefix sampling"})
    mom2_adjustment: bool = field(default=True, metadata={"help": "use C^-1 k* (False: k* itself)"})
    stats_corpus: str = field(default="wiki", metadata={"help": "corpus of the second-moment statistics"})
    stats_samples: int = field(default=100_000, metadata={
        "help": "texts for the statistics (paper: 100,000; capped at the corpus size)"})

    def __post_init__(self) -> None:
        self.context_lengths = tuple(int(n) for n in self.context_lengths)
        if isinstance(self.layer, str) and self.layer != "auto":
            try:
                self.layer = int(self.layer)
            except ValueError as err:
                raise ValueError(f"layer must be an int or 'auto', got {self.layer!r}") from err
        if self.v_steps < 1 or self.contexts_per_length < 0 or self.stats_samples < 1:
            raise ValueError("v_steps and stats_samples must be >= 1, contexts_per_length >= 0")
        if "{}" not in self.kl_prompt:
            raise ValueError(f"kl_prompt {self.kl_prompt!r} must contain '{{}}'")


# ---- tokens ------------------------------------------------------------------------------------------------------
def subject_last_token(lm: LM, template: str, subject: str) -> tuple[list[int], int]:
    """Token ids of ``template`` with the subject filled in, and the index of the subject's last token."""
    text = template.replace("{}", subject, 1)
    start = template.index("{}")
    end = start + len(subject)
    enc = lm.tokenizer(text, return_offsets_mapping=True)
    inside = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > a and a < end and b > start]
    if not inside:
        raise InputError(f"subject {subject!r} covers no token of {text!r}")
    return list(enc["input_ids"]), inside[-1]


def pad_right(rows: list[list[int]], device, min_width: int = 0, *, left: bool = False,
              pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), both (n, max_len), padded with ``pad_id`` (never attended to).

    Padding goes on the right, or on the left with ``left=True`` (batched generation).
    """
    width = max(min_width, *(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        at = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, at] = torch.tensor(r, dtype=torch.long)
        mask[i, at] = 1
    return ids.to(device), mask.to(device)


def target_ids(lm: LM, target: str) -> list[int]:
    """Token ids of the target continuation (no special tokens)."""
    ids = lm.tokenizer(target, add_special_tokens=False)["input_ids"]
    if not ids:
        raise InputError(f"target {target!r} has no tokens")
    return ids


# ---- step 1: context prefixes --------------------------------------------------------------------------------------
@torch.no_grad()
def _sample(lm: LM, n: int, new_tokens: int, seed: int) -> list[str]:
    """N texts of ``new_tokens`` tokens sampled (top-5, as ROME) from the start-of-text token."""
    start = lm.tokenizer.bos_token_id if lm.tokenizer.bos_token_id is not None else lm.tokenizer.eos_token_id
    ids = torch.full((n, 1), start, dtype=torch.long, device=lm.device)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(new_tokens):
        top = lm.model(input_ids=ids, use_cache=False).logits[:, -1].float().topk(5, -1)
        choice = torch.multinomial(torch.softmax(top.values, -1).cpu(), 1, generator=gen).to(lm.device)
        ids = torch.cat([ids, top.indices.gather(1, choice)], 1)
    return lm.tokenizer.batch_decode(ids[:, 1:], skip_special_tokens=True)


def context_prefixes(lm: LM, config: RomeConfig) -> list[str]:
    """ROME's context templates: "{}" and sampled texts + ". {}" (cached on the LM per setting)."""
    key = (config.context_lengths, config.contexts_per_length, config.context_seed)
    cache = lm.__dict__.setdefault("_rome_prefixes", {})
    if key not in cache:
        texts = ["{}"]
        for i, length in enumerate(config.context_lengths):
            sampled = _sample(lm, config.contexts_per_length, length - 1, config.context_seed + i)
            texts += [t.replace("{", " ").replace("}", " ") + ". {}" for t in sampled]
        cache[key] = texts
    return cache[key]


# ---- step 2: the key ---------------------------------------------------------------------------------------------
def value_site(lm: LM, layer: int) -> ModuleSite:
    """The output of W_out at ``layer`` (the MLP value before any post-norm)."""
    module = lm.layout.part(lm.check(Site(layer, "mlp_out")).layer, "mlp_out_proj")
    return ModuleSite(next(n for n, m in lm.model.named_modules() if m is module), "output")


@torch.no_grad()
def compute_key(lm: LM, request: EditRequest, layer: int, prefixes: list[str]) -> dict[str, torch.Tensor]:
    """{"k_star": mean key over the prefixes (d_mlp,), "k": key and "v": W_out output of the bare prompt}."""
    encoded = [subject_last_token(lm, p.replace("{}", request.prompt), request.subject) for p in prefixes]
    ids, mask = pad_right([e[0] for e in encoded], lm.device)
    idx = torch.tensor([e[1] for e in encoded], device=lm.device)
    key, value = Site(layer, "mlp_key"), value_site(lm, layer)
    with lm.hooks(capture(key), capture(value), stop_after=value) as cache:
        lm.model(input_ids=ids, attention_mask=mask, use_cache=False)
    rows = torch.arange(len(prefixes), device=lm.device)
    keys = cache[key][rows, idx].float()  # (n_prefixes, d_mlp)
    bare = prefixes.index("{}")
    return {"k_star": keys.mean(0), "k": keys[bare], "v": cache[value][bare, idx[bare]].float()}


# ---- step 4: the update ------------------------------------------------------------------------------------------
def rank_one_update(k_star: torch.Tensor, k: torch.Tensor, v: torch.Tensor, v_star: torch.Tensor,
                    second_moment: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(u (d_mlp,), right (d_model,)) with W_out <- W_out + right u^T; the edited W_out maps k to v*."""
    u = k_star.double()
    if second_moment is not None:
        u = torch.linalg.solve(second_moment.to(u.device, torch.float64), u)  # C^-1 k*
    u = (u / u.norm()).float()
    right = (v_star.float() - v.float()) / (u @ k.float())
    return u, right


def _w_out(lm: LM, layer: int) -> tuple[torch.nn.Parameter, bool]:
    """W_out's parameter and whether it is stored transposed, (d_mlp, d_model) (transformers' Conv1D)."""
    module = lm.layout.part(lm.check(Site(layer, "mlp_out")).layer, "mlp_out_proj")
    return module.weight, type(module).__name__ == "Conv1D"


def weight_digest(lm: LM, layer: int) -> str:
    """A short hash of W_out at ``layer``: an edit applies only to the weights it was computed on."""
    w = _w_out(lm, layer)[0].detach().flatten()
    return hashlib.sha256(w[:: max(1, w.numel() // 65536)].float().cpu().numpy().tobytes()).hexdigest()[:16]


# ---- the edit as data, and its application ---------------------------------------------------------------------
@dataclass
class RomeEdit(Result):
    """One ROME edit: W_out[layer] += right u^T, with what it was computed from."""

    model: str
    layer: int
    request: EditRequest
    u: torch.Tensor  # (d_mlp,) C^-1 k* / |C^-1 k*|
    right: torch.Tensor  # (d_model,) (v* - W_out k) / (u . k)
    weights: str  # weight_digest of W_out before the edit
    v0_norm: float
    delta_norm: float
    losses: list[dict]
    prefixes: list[str]
    stats_texts: int  # texts behind the second moment (0: no adjustment)
    config: RomeConfig = field(default_factory=RomeConfig)

    def delta(self, transposed: bool = False) -> torch.Tensor:
        """The update as a matrix: (d_model, d_mlp), or (d_mlp, d_model) for transposed storage."""
        return torch.outer(self.u, self.right) if transposed else torch.outer(self.right, self.u)


class EditHandle:
    """An applied edit; ``undo()`` (or leaving a ``with`` block) restores W_out bit for bit."""

    def __init__(self, lm: LM, edit: RomeEdit, original: torch.Tensor):
        self.lm, self.edit, self._original = lm, edit, original
        self.active = True

    def undo(self) -> None:
        """Put the original weights back. Edits stacked on the same model are undone last-in, first-out."""
        if not self.active:
            return
        stack = self.lm.__dict__.setdefault("_rome_edits", [])
        if stack and stack[-1] is not self:
            raise RuntimeError("undo the later edits first: edits on one model are undone in reverse order")
        param, _ = _w_out(self.lm, self.edit.layer)
        with torch.no_grad():
            param.copy_(self._original)
        stack.pop()
        self.active = False

    def __enter__(self) -> EditHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.undo()


def apply_edit(lm: LM, edit: RomeEdit, check: bool = True) -> EditHandle:
    """Apply a (possibly reloaded) edit to ``lm``; it must hold the W_out the edit was computed on."""
    param, transposed = _w_out(lm, edit.layer)
    if param.numel() != edit.u.numel() * edit.right.numel() or (check and weight_digest(lm, edit.layer) !=
                                                                  edit.weights):
        raise InputError(f"this edit was computed on other weights at layer {edit.layer} ({edit.model}); "
                         f"apply it to the model (and the earlier edits) it was made on")
    original = param.detach().clone()
    with torch.no_grad():
        param.add_(edit.delta(transposed).to(param.device, param.dtype))
    handle = EditHandle(lm, edit, original)
    lm.__dict__.setdefault("_rome_edits", []).append(handle)
    return handle


def resolve_layer(lm: LM, config: RomeConfig) -> int:
    """The edit layer: the configured one, or the MLP AIE peak at the last subject token of a cached trace."""
    if config.layer != "auto":
        return lm.check(Site(int(config.layer), "mlp_out")).layer
    from lmscope.methods.trace_dataset import cached_peak

    peak = cached_peak(lm)
    if peak is None:
        raise InputError(f"layer='auto' needs a causal-trace result for {lm.name}: run `lmscope trace-dataset "
                         f"--model {lm.name} --data known_1000.json` once, or give the layer")
    return peak


def rome_edit(lm: LM, request: EditRequest, config: RomeConfig | None = None, stats=None) -> EditHandle:
    """Edit ``lm`` in place so that ``request.text`` continues with ``request.target``; returns the undo handle.

    ``stats``: a :class:`lmscope.methods.rome.stats.SecondMoment` for the layer (default: the cached one,
    computed on first use).
    """
    config = config or RomeConfig()
    layer = resolve_layer(lm, config)
    subject_last_token(lm, request.prompt, request.subject)  # bad input fails before any work
    prefixes = context_prefixes(lm, config)
    keys = compute_key(lm, request, layer, prefixes)
    moment = None
    if config.mom2_adjustment:
        from lmscope.methods.rome.stats import second_moment

        stats = stats or second_moment(lm, layer, config.stats_corpus, config.stats_samples)
        stats.check(lm, layer)
        moment = stats.matrix
    from lmscope.methods.rome.value import compute_value

    value = compute_value(lm, request, layer, prefixes, config)
    u, right = rank_one_update(keys["k_star"], keys["k"], keys["v"], value["v_star"], moment)
    edit = RomeEdit(model=lm.name, layer=layer, request=request, u=u, right=right,
                    weights=weight_digest(lm, layer), v0_norm=float(value["v0"].norm()),
                    delta_norm=float(value["delta"].norm()), losses=value["losses"], prefixes=prefixes,
                    stats_texts=stats.texts if moment is not None else 0, config=config)
    return apply_edit(lm, edit)
