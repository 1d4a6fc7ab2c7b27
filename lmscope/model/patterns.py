"""Attention patterns from any attention implementation, without switching the model to eager.

Hugging Face attention modules call ``ALL_ATTENTION_FUNCTIONS[config._attn_implementation]``. While a pattern
hook is active on a model using SDPA (or another fused kernel), lmscope registers a wrapper implementation that
calls the original kernel unchanged, so outputs stay bit-identical, and for the hooked modules only also computes
softmax(q k^T * scale + mask) from the same query, key and mask. Eager models already return their weights; those
are read from the attention module's output instead. The same wrapper can also freeze a module's pattern
(:func:`freeze_pattern`): it then attends with a given pattern, so its output is linear in its values.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable

import torch
from torch import nn
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from lmscope.errors import PatternHookError

PREFIX = "lmscope_patterns+"
PatternFn = Callable[[torch.Tensor], object]

_HOOKS: weakref.WeakKeyDictionary[nn.Module, list[PatternFn]] = weakref.WeakKeyDictionary()
_FROZEN: weakref.WeakKeyDictionary[nn.Module, torch.Tensor] = weakref.WeakKeyDictionary()  # module -> its pattern
_INSTALLED: dict[int, list] = {}  # id(config) -> [original implementation name, number of active hooks]


def attention_pattern(
    module: nn.Module,
    query: torch.Tensor,  # (batch, head, q_pos, d_head)
    key: torch.Tensor,  # (batch, kv_head, k_pos, d_head)
    attention_mask: torch.Tensor | None,  # (batch, 1, q_pos, k_pos) bool or additive float, or None
    scaling: float | None = None,
    softcap: float | None = None,
    is_causal: bool | None = None,
) -> torch.Tensor:  # (batch, head, q_pos, k_pos)
    """softmax(q k^T * scaling [+ soft-cap] + mask), as the model's eager attention computes it."""
    groups = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(groups, dim=1) if groups > 1 else key
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)).float() * scale  # (batch, head, q_pos, k_pos)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    low = torch.finfo(scores.dtype).min
    if attention_mask is None:
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        if causal:
            q_len, k_len = scores.shape[-2:]
            allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=scores.device).tril(k_len - q_len)
            scores = scores.masked_fill(~allowed, low)
    elif attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, low)
    else:
        scores = scores + attention_mask.float()
    return torch.softmax(scores, dim=-1).to(query.dtype)


def _wrapper(base: Callable) -> Callable:
    def attention_with_patterns(module, query, key, value, attention_mask, *args, **kwargs):
        frozen = _FROZEN.get(module)
        if frozen is not None:  # a fixed pattern: the output is linear in the values
            return frozen_attention(frozen, value), frozen
        out = base(module, query, key, value, attention_mask, *args, **kwargs)
        fns = _HOOKS.get(module)
        if fns:
            pattern = attention_pattern(module, query, key, attention_mask, kwargs.get("scaling"),
                                        kwargs.get("softcap"), kwargs.get("is_causal"))
            for fn in list(fns):
                _call(fn, pattern)
        return out

    return attention_with_patterns


def frozen_attention(pattern: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The attention output of a fixed pattern, as the kernels return it: (batch, q_pos, head, d_head).

    pattern: (batch or 1, head, q_pos, k_pos); value: (batch, kv_head, k_pos, d_head) (grouped heads repeated).
    """
    groups = pattern.shape[1] // value.shape[1]
    value = value.repeat_interleave(groups, dim=1) if groups > 1 else value
    return torch.matmul(pattern.to(value.dtype), value).transpose(1, 2).contiguous()


def _call(fn: PatternFn, pattern: torch.Tensor) -> None:
    if fn(pattern) is not None:
        raise PatternHookError("attention patterns can be captured, not replaced (edit attn_out or the keys instead)")


def _install(config, module: nn.Module | None = None) -> None:
    key = id(config)
    if key in _INSTALLED:
        _INSTALLED[key][1] += 1
        return
    base_name = config._attn_implementation
    name = PREFIX + base_name
    if base_name == "eager":  # the model's own eager function (models call it directly, not from the registry)
        base = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
        if base is None:
            raise PatternHookError(f"{type(module).__name__} has no eager_attention_forward to wrap; load the model "
                                   "with sdpa attention")
        name = f"{PREFIX}eager-{type(module).__module__}"
        if name not in ALL_ATTENTION_FUNCTIONS.valid_keys():
            ALL_ATTENTION_FUNCTIONS.register(name, _wrapper(base))
            ALL_MASK_ATTENTION_FUNCTIONS.register(name, ALL_MASK_ATTENTION_FUNCTIONS["eager"])
    elif name not in ALL_ATTENTION_FUNCTIONS.valid_keys():
        ALL_ATTENTION_FUNCTIONS.register(name, _wrapper(ALL_ATTENTION_FUNCTIONS[base_name]))
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base_name])
    _INSTALLED[key] = [base_name, 1]
    config._attn_implementation = name


def _uninstall(config) -> None:
    entry = _INSTALLED[id(config)]
    entry[1] -= 1
    if entry[1] == 0:
        config._attn_implementation = entry[0]
        del _INSTALLED[id(config)]


class _Handle:
    def __init__(self, remove: Callable[[], None]):
        self.remove = remove


def _config_of(module: nn.Module):
    config = getattr(module, "config", None)
    impl = getattr(config, "_attn_implementation", None)
    if impl is None:
        raise PatternHookError(f"{type(module).__name__} has no config._attn_implementation; cannot read patterns")
    return config, impl


def freeze_pattern(module: nn.Module, pattern: torch.Tensor) -> _Handle:
    """While the handle lives, ``module`` attends with ``pattern`` (batch or 1, head, q_pos, k_pos).

    Whatever its queries and keys, its output is then linear in its values (an attribution graph's frozen
    attention).
    """
    config, _ = _config_of(module)
    _install(config, module)
    _FROZEN[module] = pattern

    def remove() -> None:
        _FROZEN.pop(module, None)
        _uninstall(config)

    return _Handle(remove)


def register_pattern_hook(module: nn.Module, fn: PatternFn) -> _Handle:
    """Call ``fn(pattern)`` with the (batch, head, q_pos, k_pos) pattern each time ``module`` runs."""
    config, impl = _config_of(module)
    if impl == "eager":
        def read_weights(_m, _args, output):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise PatternHookError(f"{type(module).__name__} returned no attention weights in eager mode")
            _call(fn, weights)

        return module.register_forward_hook(read_weights)
    _HOOKS.setdefault(module, []).append(fn)
    _install(config)

    def remove() -> None:
        _HOOKS[module].remove(fn)
        _uninstall(config)

    return _Handle(remove)
