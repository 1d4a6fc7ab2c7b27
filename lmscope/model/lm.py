"""``LM``: an unmodified Hugging Face causal LM + its tokenizer + its family layout.

The wrapper adds no modules and changes no weights; with no hooks its logits are the bare model's, bit for bit.
"""

from __future__ import annotations

import functools
import hashlib
import weakref
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TypeVar

import torch
from torch import nn

from lmscope.errors import FamilySpecError, InputError, SiteError
from lmscope.model.families import FamilySpec, spec_for
from lmscope.model.hooks import ActivationCache, Op, capture, hooks
from lmscope.model.sites import KINDS, HookPoint, ModuleSite, Site
from lmscope.model.weights import linear_dims, linear_weight

T = TypeVar("T")


def check_prompt(text: str) -> str:
    """Return ``text`` if it is a non-blank string, else raise :class:`InputError`."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("empty prompt: give at least one non-blank prompt")
    return text


_BLOCK_FIELDS = ("attn", "mlp", "mlp_in", "mlp_out_proj", "mlp_up", "attn_out", "mlp_out", "attn_out_proj")


def _get(model: nn.Module, path: str, spec: FamilySpec, field: str, where: str = "") -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError as err:
        raise FamilySpecError(f"family spec {spec.name!r}: {field}={path!r} does not exist in "
                              f"{type(model).__name__}{where}; fix that field of the spec") from err


class Layout:
    """A family spec resolved against one model: the actual modules, checked once at load time."""

    def __init__(self, model: nn.Module, spec: FamilySpec):
        self.spec = spec
        self.embed = _get(model, spec.embed, spec, "embed")
        self.blocks: list[nn.Module] = list(_get(model, spec.blocks, spec, "blocks"))
        self.final_norm = _get(model, spec.final_norm, spec, "final_norm")
        self.unembed = _get(model, spec.unembed, spec, "unembed")
        self._parts: list[dict[str, nn.Module]] = []
        for i, block in enumerate(self.blocks):
            paths = {f: getattr(spec, f) for f in _BLOCK_FIELDS if getattr(spec, f) is not None}
            self._parts.append({f: _get(block, p, spec, f, f" (block {i})") for f, p in paths.items()})

    def part(self, layer: int, field: str) -> nn.Module:
        """Module ``field`` of block ``layer``; ``attn_out``/``mlp_out`` fall back to ``attn``/``mlp``."""
        parts = self._parts[layer]
        if field in parts:
            return parts[field]
        if field in ("attn_out", "mlp_out"):
            return parts[field[:-4]]
        raise FamilySpecError(f"family spec {self.spec.name!r} has no {field!r}")


def probed(fn: Callable[[LM], T]) -> Callable[[LM], T]:
    """Memoise a probe of the model's behaviour (``fn(lm)``) once per model, keyed by the module, not on the LM."""
    results: weakref.WeakKeyDictionary[nn.Module, T] = weakref.WeakKeyDictionary()

    @functools.wraps(fn)
    def wrapper(lm: LM) -> T:
        if lm.model not in results:
            results[lm.model] = fn(lm)
        return results[lm.model]

    return wrapper


class LM:
    """A wrapped causal language model. Build one with :func:`lmscope.load`."""

    def __init__(self, model: nn.Module, tokenizer=None, *, name: str | None = None,
                 spec: FamilySpec | None = None, processor=None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.processor = processor  # a vision-language model's processor (images + text -> inputs), else None
        self.config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.name = name or getattr(self.config, "_name_or_path", None) or type(model).__name__
        self.layout = Layout(model, spec or spec_for(model))

    # ---- shape facts -------------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        """Number of transformer blocks."""
        return len(self.layout.blocks)

    @property
    def d_model(self) -> int:
        """Residual stream width."""
        return self.W_U.shape[1]

    @property
    def d_mlp(self) -> int:
        """MLP hidden width (columns of W_out)."""
        return self.W_out(0).shape[1]

    @property
    def n_heads(self) -> int:
        """Attention heads per block (query heads)."""
        config = self.config.get_text_config() if hasattr(self.config, "get_text_config") else self.config
        heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)
        if not heads:
            raise FamilySpecError(f"{self.name}: the config gives no number of attention heads")
        return int(heads)

    @property
    def d_head(self) -> int:
        """Width of one head's output (the ``attn_heads`` site is n_heads x d_head wide)."""
        return linear_dims(self.layout.part(0, "attn_out_proj"))[0] // self.n_heads

    @property
    def vocab_size(self) -> int:
        """Rows of W_U."""
        return self.W_U.shape[0]

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return self.W_U.device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the weights."""
        return self.W_U.dtype

    @property
    def parallel(self) -> bool:
        """Whether attention and MLP both read the block input (GPT-J, GPT-NeoX, Phi)."""
        p = self.layout.spec.parallel
        return bool(getattr(self.config, p, False)) if isinstance(p, str) else p

    # ---- weights -----------------------------------------------------------------------------------------
    @property
    def W_U(self) -> torch.Tensor:  # noqa: N802
        """Unembedding matrix, (vocab, d_model)."""
        return self.layout.unembed.weight

    def W_out(self, layer: int) -> torch.Tensor:  # noqa: N802
        """MLP output projection of block ``layer`` as (d_model, d_mlp), whatever the storage layout."""
        return linear_weight(self.layout.part(self.check(Site(layer, "mlp_out")).layer, "mlp_out_proj"))

    def W_in(self, layer: int) -> torch.Tensor:  # noqa: N802
        """MLP input (gate) projection of block ``layer`` as (d_mlp, d_model)."""
        return linear_weight(self.layout.part(self.check(Site(layer, "mlp_pre")).layer, "mlp_in"))

    # ---- sites -------------------------------------------------------------------------------------------
    def check(self, site: Site) -> Site:
        """Validate ``site`` against this model; negative layers are counted from the end."""
        layer = site.layer + self.n_layers if site.layer < 0 else site.layer
        if not 0 <= layer < self.n_layers:
            raise SiteError(f"layer {site.layer} is out of range: {self.name} has {self.n_layers} layers "
                            f"(0..{self.n_layers - 1})")
        return site if layer == site.layer else Site(layer, site.kind)

    def sites(self, kind: str, layers: Sequence[int] | None = None) -> list[Site]:
        """``Site(l, kind)`` for every layer (or the given ones)."""
        return [self.check(Site(layer, kind)) for layer in (range(self.n_layers) if layers is None else layers)]

    def hook_point(self, site: Site | ModuleSite) -> HookPoint:
        """The module and hook position that carry ``site``: the one place sites become modules."""
        if isinstance(site, ModuleSite):
            return HookPoint(_get(self.model, site.path, self.layout.spec, "module path"), site.where, site.pos_dim)
        site = self.check(site)
        layer, part = site.layer, self.layout.part
        table = {
            "embed": lambda: (self.layout.embed, "output"),
            "resid_pre": lambda: (self._block_slot(layer), "input"),
            "resid_post": lambda: (self._block_slot(layer), "output"),
            "attn_out": lambda: (part(layer, "attn_out"), "output"),
            "mlp_in": lambda: (part(layer, "mlp"), "input"),
            "mlp_out": lambda: (part(layer, "mlp_out"), "output"),
            "mlp_key": lambda: (part(layer, "mlp_out_proj"), "input"),
            "mlp_value": lambda: (part(layer, "mlp_out_proj"), "output"),
            "mlp_pre": lambda: (part(layer, "mlp_in"), "output"),
            "attn_pattern": lambda: (part(layer, "attn"), "pattern"),
            "attn_heads": lambda: (part(layer, "attn_out_proj"), "input"),
        }
        module, where = table[site.kind]()
        return HookPoint(module, where, site.pos_dim)

    def _block_slot(self, layer: int) -> nn.Module:
        """The module now in block slot ``layer`` (during block surgery: the stand-in, which sees the stream)."""
        return self.block_list()[layer]

    def block_list(self) -> nn.ModuleList:
        """The model's live list of blocks (block surgery swaps its entries; ``layout.blocks`` keeps the originals)."""
        return _get(self.model, self.layout.spec.blocks, self.layout.spec, "blocks")

    def module_path(self, site: Site) -> str:
        """Dotted module path of the module that carries ``site`` (for display)."""
        target = self.hook_point(site).module
        return next(n for n, m in self.model.named_modules() if m is target)

    # ---- running -----------------------------------------------------------------------------------------
    @property
    def context_length(self) -> int | None:
        """The most positions the model takes (``config.max_position_embeddings`` or its equivalents), if known."""
        for attr in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
            value = getattr(self.config, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def check_length(self, n_tokens: int) -> None:
        """Refuse an input of ``n_tokens`` positions that is longer than the model's context."""
        limit = self.context_length
        if limit is not None and n_tokens > limit:
            raise InputError(f"the input has {n_tokens} tokens, more than the {limit} positions {self.name} takes "
                             "(its context length); shorten it")

    def hooks(self, *ops: Op, stop_after: Site | None = None) -> AbstractContextManager[ActivationCache]:
        """The hook core on this model: see :func:`lmscope.hooks`."""
        return hooks(self, *ops, stop_after=stop_after)

    def tokenize(self, text: str | Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids (batch, pos) and attention mask of one prompt or a batch (right-padded)."""
        texts = [text] if isinstance(text, str) else list(text)
        if self.tokenizer is None:
            raise InputError("this LM has no tokenizer; pass token ids, or load it with a tokenizer")
        if not texts:
            raise InputError("empty prompt: give at least one non-blank prompt")
        for t in texts:
            check_prompt(t)
        enc = self.tokenizer(texts, return_tensors="pt", padding=len(texts) > 1)
        self.check_length(enc["input_ids"].shape[1])
        return {"input_ids": enc["input_ids"].to(self.device), "attention_mask": enc["attention_mask"].to(self.device)}

    def to_str_tokens(self, ids: torch.Tensor | Sequence[int]) -> list[str]:
        """Each token of a 1-d id sequence decoded on its own (" Paris", not "ĠParis")."""
        return [self.tokenizer.decode([int(i)]) for i in torch.as_tensor(ids).reshape(-1)]

    def _inputs(self, inputs: str | Sequence[str] | torch.Tensor | dict) -> dict[str, torch.Tensor]:
        if isinstance(inputs, Mapping):  # a tokenizer's or processor's output (BatchEncoding is not a dict)
            return dict(inputs)
        if isinstance(inputs, torch.Tensor):
            if inputs.ndim != 2 or inputs.shape[1] == 0:
                raise InputError(f"token ids must be (batch, pos) with pos >= 1, got {tuple(inputs.shape)}")
            self.check_length(inputs.shape[1])
            return {"input_ids": inputs.to(self.device)}
        return self.tokenize(inputs)

    def forward(self, inputs: str | Sequence[str] | torch.Tensor | dict) -> torch.Tensor:
        """Logits (batch, pos, vocab) of the unmodified model for text, token ids or a tokenizer dict."""
        return self.model(**self._inputs(inputs), use_cache=False).logits

    __call__ = forward

    @torch.no_grad()
    def run_with_cache(self, inputs, sites: Sequence[Site], *ops: Op,
                       stop_after: Site | None = None) -> tuple[torch.Tensor | None, ActivationCache]:
        """Run once, capturing ``sites`` (plus any extra ``ops``); logits are None if stopped early."""
        logits = None
        with self.hooks(*ops, *(capture(s) for s in sites), stop_after=stop_after) as cache:
            logits = self.forward(inputs)
        return logits, cache

    def next_token_loss(self, ids: torch.Tensor, *ops: Op) -> torch.Tensor:
        """Summed next-token NLL (float32 scalar) of a batch of token ids (batch, pos) under ``ops``."""
        with self.hooks(*ops):
            logits = self.model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum")

    def unembed(self, resid: torch.Tensor) -> torch.Tensor:
        """Final norm + W_U (+ the model's logit soft-cap): (..., d_model) -> (..., vocab)."""
        logits = self.layout.unembed(self.layout.final_norm(resid))
        cap_attr = self.layout.spec.logit_softcap
        cap = getattr(self.config, cap_attr, None) if cap_attr else None
        return torch.tanh(logits / cap) * cap if cap else logits

    def fingerprint(self) -> str:
        """A short hash of the architecture and (a strided sample of) every weight, to key cached statistics.

        It changes when the model or its weights change (an edited model has another fingerprint).
        """
        h = hashlib.sha256(type(self.model).__name__.encode())
        h.update(self.config.to_json_string(use_diff=False).encode())
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                flat = p.detach().flatten()
                h.update(name.encode())
                h.update(flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def _describe_site(self, site: Site) -> str:
        try:
            return f"{self.module_path(site)} [{self.hook_point(site).where}]"
        except FamilySpecError as err:  # e.g. attn_heads of an inferred spec without an output projection
            return f"unavailable ({err})"

    def describe(self) -> dict:
        """Family, sizes and the module path of every site kind at layer 0 (for ``lmscope info``)."""
        return {
            "name": self.name, "family": self.layout.spec.name, "class": type(self.model).__name__,
            "n_layers": self.n_layers, "d_model": self.d_model, "d_mlp": self.d_mlp, "vocab_size": self.vocab_size,
            "n_heads": getattr(self.config, "num_attention_heads", None), "parallel_blocks": self.parallel,
            "attn_implementation": getattr(self.config, "_attn_implementation", None),
            "dtype": str(self.dtype).removeprefix("torch."), "device": str(self.device),
            "sites (layer 0)": {k: self._describe_site(Site(0, k)) for k in KINDS},
        }

    def __repr__(self) -> str:
        return f"LM({self.name!r}, family={self.layout.spec.name}, layers={self.n_layers}, d_model={self.d_model})"
