"""The model linearised around one clean run: attention patterns and normalisation denominators frozen.

:meth:`Linearization.capture` runs the prompt once (no gradients) and records every attention pattern and, for
every norm, its clean input x0 and the map it applies with its clean denominator: RMSNorm ``x -> x * w / rms(x0)``
(``w`` or Gemma's ``1 + w``, whichever reproduces the clean output), LayerNorm
``x -> (x - mean(x)) * w / std(x0) + b``. Under :meth:`Linearization.frozen` the model then computes, at any input,
``y0 + J (x - x0)`` at every norm and ``A0 @ V`` at every attention module: a map that is affine (linear without
biases) in the residual stream's inputs, equal to the clean run at the clean inputs. This is the frozen part of an
attribution graph's replacement model (Ameisen et al. 2025; circuit-tracer detaches the same quantities).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from lmscope.errors import HookError
from lmscope.model.hooks import apply
from lmscope.model.lm import LM
from lmscope.model.patterns import freeze_pattern, register_pattern_hook
from lmscope.model.sites import ModuleSite


def is_norm(module: nn.Module) -> bool:
    """A LayerNorm or an RMSNorm of any family (by class, or by the name transformers gives them)."""
    name = type(module).__name__
    return isinstance(module, nn.LayerNorm) or name.endswith(("RMSNorm", "LayerNorm"))


@dataclass
class FrozenNorm:
    """A norm with its clean denominator: ``y = y0 + (x - x0 [- mean]) * scale``."""

    x0: torch.Tensor  # (..., d) the clean input
    y0: torch.Tensor  # (..., d) the clean output
    scale: torch.Tensor  # (..., d) weight / clean denominator
    centred: bool  # LayerNorm subtracts the mean

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        delta = x - self.x0
        if self.centred:
            delta = delta - delta.mean(-1, keepdim=True)
        return self.y0 + delta * self.scale


def _frozen_norm(module: nn.Module, x0: torch.Tensor, y0: torch.Tensor, path: str) -> FrozenNorm:
    """The norm's map with its clean denominator, checked to reproduce the clean output."""
    x, y = x0.detach().float(), y0.detach().float()
    weight = getattr(module, "weight", None)
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6))
    if isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("LayerNorm") and \
            not type(module).__name__.endswith("RMSNorm"):
        centred = x - x.mean(-1, keepdim=True)
        sigma = (centred.pow(2).mean(-1, keepdim=True) + eps).sqrt()
        w = weight.float() if weight is not None else torch.ones_like(x[..., 0:1])
        candidates = [(w / sigma, True)]
    else:
        sigma = (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
        w = weight.float() if weight is not None else torch.ones(x.shape[-1])
        candidates = [(w / sigma, False), ((1 + w) / sigma, False)]
    for scale, centred in candidates:
        rebuilt = ((x - x.mean(-1, keepdim=True)) if centred else x) * scale
        bias = getattr(module, "bias", None)
        rebuilt = rebuilt + bias.float() if centred and bias is not None else rebuilt
        if torch.allclose(rebuilt, y, rtol=1e-3, atol=1e-4 * float(y.abs().max()) + 1e-6):
            return FrozenNorm(x0.detach(), y0.detach(), scale.to(y0.dtype), centred)
    raise HookError(f"the norm at {path} ({type(module).__name__}) is neither an RMSNorm nor a LayerNorm as lmscope "
                    "knows them: its denominator cannot be frozen")


class Linearization:
    """Frozen attention patterns and norm denominators of one clean run (see the module docstring)."""

    def __init__(self, norms: dict[str, FrozenNorm], patterns: dict[nn.Module, torch.Tensor]):
        self.norms = norms
        self.patterns = patterns

    @classmethod
    @torch.no_grad()
    def capture(cls, lm: LM, inputs, exclude: tuple[str, ...] = ()) -> Linearization:
        """Run ``inputs`` once and record what :meth:`frozen` holds fixed.

        Norms at ``exclude`` paths are left out (a replacement writes their output itself).
        """
        paths = [p for p, m in lm.model.named_modules() if is_norm(m) and p not in exclude]
        modules = dict(lm.model.named_modules())
        sites = [ModuleSite(p, w) for p in paths for w in ("input", "output")]
        attn = [lm.layout.part(layer, "attn") for layer in range(lm.n_layers)]
        patterns: dict[nn.Module, torch.Tensor] = {}
        with ExitStack() as stack:
            for module in attn:
                stack.enter_context(_pattern_reader(module, patterns))
            _, cache = lm.run_with_cache(inputs, sites)
        norms = {p: _frozen_norm(modules[p], cache[ModuleSite(p, "input")], cache[ModuleSite(p, "output")], p)
                 for p in paths}
        return cls(norms, patterns)

    @contextmanager
    def frozen(self, lm: LM, *ops) -> Iterator:
        """The model with every captured pattern and norm fixed, plus ``ops`` (a hooks context; yields its cache)."""
        norm_ops = []
        for path, norm in self.norms.items():
            seen: dict = {}
            norm_ops += [apply(ModuleSite(path, "input"), _norm_reader(seen)),
                         apply(ModuleSite(path, "output"), _norm_writer(norm, path, seen))]
        with ExitStack() as stack:
            for module, pattern in self.patterns.items():
                handle = freeze_pattern(module, pattern)
                stack.callback(handle.remove)
            cache = stack.enter_context(lm.hooks(*norm_ops, *ops))
            yield cache


@contextmanager
def _pattern_reader(module: nn.Module, out: dict) -> Iterator[None]:
    def keep(pattern: torch.Tensor) -> None:
        out[module] = pattern.detach()

    handle = register_pattern_hook(module, keep)
    try:
        yield
    finally:
        handle.remove()


def _norm_reader(seen: dict):
    def read(x: torch.Tensor) -> torch.Tensor:
        seen["x"] = x
        return x

    return read


def _norm_writer(norm: FrozenNorm, path: str, seen: dict):
    def write(y: torch.Tensor) -> torch.Tensor:
        x = seen.get("x")
        if x is None or x.shape[-1] != norm.x0.shape[-1] or x.shape[-2] != norm.x0.shape[-2]:
            raise HookError(f"the frozen norm at {path} saw another input than its clean run")
        return norm(x).to(y.dtype)

    return write
