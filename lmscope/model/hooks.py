"""The hook core: one context manager that captures or changes activations at any set of sites.

    >>> with hooks(lm, capture(Site(3, "resid_post")), zero(Site(5, "mlp_out"), positions=[-1])) as cache:
    ...     lm(ids)
    >>> cache[Site(3, "resid_post")].shape  # (batch, pos, d_model)

Operations: :func:`capture`, :func:`replace`, :func:`add`, :func:`zero`, :func:`apply`, each optionally limited to
some token ``positions`` and batch ``rows``. ``stop_after=site`` ends the forward pass as soon as that site has
been computed (the ``with`` body is left silently at that point). Hooks are removed when the block exits, also
on exceptions. Several operations on one site run in the order given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import nn

from lmscope.errors import HookError
from lmscope.model.patterns import register_pattern_hook
from lmscope.model.sites import HookPoint, ModuleSite, Site

Index = None | int | slice | Sequence[int] | torch.Tensor
Action = Literal["capture", "replace", "add", "zero", "apply"]
AnySite = Site | ModuleSite


class StopForward(Exception):
    """Raised inside a hook to end the forward pass early; swallowed by :func:`hooks`."""


class Resolver(Protocol):
    """Anything that turns a site into a hook point (an :class:`lmscope.LM` does)."""

    def hook_point(self, site: AnySite) -> HookPoint: ...  # noqa: D102


@dataclass(frozen=True)
class Op:
    """One operation at one site. Build it with :func:`capture`, :func:`replace`, :func:`add`, ..."""

    site: AnySite
    action: Action
    value: torch.Tensor | float | None = None
    fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    positions: Index = None
    rows: Index = None
    grad: bool = False


def capture(site: AnySite, *, positions: Index = None, rows: Index = None, grad: bool = False) -> Op:
    """Store the site's value in the cache; ``grad=True`` keeps it in the autograd graph (``.grad`` retained)."""
    if grad and (positions is not None or rows is not None):
        raise HookError("capture(grad=True) keeps the whole tensor; select positions/rows afterwards")
    return Op(site, "capture", positions=positions, rows=rows, grad=grad)


def replace(site: AnySite, value: torch.Tensor | float, *, positions: Index = None, rows: Index = None) -> Op:
    """Set the selected part of the site to ``value`` (broadcast to the selection's shape)."""
    return Op(site, "replace", value=value, positions=positions, rows=rows)


def add(site: AnySite, value: torch.Tensor | float, *, positions: Index = None, rows: Index = None) -> Op:
    """Add ``value`` (broadcast) to the selected part of the site."""
    return Op(site, "add", value=value, positions=positions, rows=rows)


def zero(site: AnySite, *, positions: Index = None, rows: Index = None) -> Op:
    """Zero-ablate the selected part of the site."""
    return Op(site, "zero", positions=positions, rows=rows)


def apply(site: AnySite, fn: Callable[[torch.Tensor], torch.Tensor], *, positions: Index = None,
          rows: Index = None) -> Op:
    """Replace the selected part ``x`` of the site with ``fn(x)`` (same shape)."""
    return Op(site, "apply", fn=fn, positions=positions, rows=rows)


def gradient_taps(sites: Sequence[AnySite], store: dict) -> list[Op]:
    """Ops that add a zero leaf to each site's value, so that the gradient at the site can be read.

    After the forward pass ``store[site] = (value, leaf)`` (value detached); ``autograd.grad(out, leaf)`` is
    d out / d value. Works with frozen weights (no parameter needs ``requires_grad``).
    """
    def tap(site: AnySite) -> Op:
        def fn(x: torch.Tensor) -> torch.Tensor:
            leaf = torch.zeros_like(x, requires_grad=True)
            store[site] = (x.detach(), leaf)
            return x + leaf
        return apply(site, fn)
    return [tap(s) for s in sites]


class ActivationCache(dict):
    """Captured activations, keyed by site."""

    def __missing__(self, site: AnySite) -> torch.Tensor:
        have = ", ".join(str(s) for s in self) or "nothing"
        raise KeyError(f"{site} was not captured (captured: {have}); did the forward pass reach it?")


Cache = ActivationCache  # the name before 0.2


def _index(idx: Index, size: int, what: str, device: torch.device) -> torch.Tensor | None:
    """Normalise an index (None, int, slice, list, tensor; negatives allowed) to a LongTensor, or None for all."""
    if idx is None:
        return None
    if isinstance(idx, slice):
        return torch.arange(size, device=device)[idx]
    t = torch.as_tensor([idx] if isinstance(idx, int) else idx, dtype=torch.long, device=device).reshape(-1)
    if t.numel() and (t.max() >= size or t.min() < -size):
        raise HookError(f"{what} {t.tolist()} out of range for size {size}")
    return t % size


def _select(x: torch.Tensor, rows: torch.Tensor | None, pos: torch.Tensor | None, dim: int) -> torch.Tensor:
    if rows is not None:
        x = x.index_select(0, rows)
    if pos is not None:
        x = x.index_select(dim, pos)
    return x


def _new_values(op: Op, sel: torch.Tensor) -> torch.Tensor:
    if op.action == "zero":
        return torch.zeros_like(sel)
    if op.action == "apply":
        out = op.fn(sel)  # type: ignore[misc]
        if not isinstance(out, torch.Tensor) or out.shape != sel.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise HookError(f"apply at {op.site}: fn returned {got}, expected shape {tuple(sel.shape)}")
        return out
    value = torch.as_tensor(op.value, dtype=sel.dtype, device=sel.device)
    try:
        value = torch.broadcast_to(value, sel.shape)
    except RuntimeError as err:
        raise HookError(f"{op.action} at {op.site}: value of shape {tuple(value.shape)} does not broadcast to "
                        f"the selection {tuple(sel.shape)}") from err
    return value if op.action == "replace" else sel + value


def _run_op(op: Op, x: torch.Tensor, dim: int, cache: ActivationCache) -> torch.Tensor | None:
    """Apply ``op`` to the site value ``x``; return the new value, or None to leave it unchanged."""
    rows = _index(op.rows, x.shape[0], "rows", x.device)
    pos = _index(op.positions, x.shape[dim], "positions", x.device)
    if op.action == "capture":
        if op.grad and x.requires_grad:
            x.retain_grad()
        cache[op.site] = x if op.grad else _select(x.detach(), rows, pos, dim)
        return None
    if rows is None and pos is None:
        return _new_values(op, x)
    new = _new_values(op, _select(x, rows, pos, dim))
    out = x.clone()
    if rows is None:
        return out.index_copy_(dim, pos, new)
    block = out.index_select(0, rows)
    block = block.index_copy_(dim, pos, new) if pos is not None else new
    return out.index_copy_(0, rows, block)


def _on_output(fn: Callable[[torch.Tensor], torch.Tensor | None]) -> Callable:
    def hook(_module, _args, output):
        x = output[0] if isinstance(output, tuple) else output
        if not isinstance(x, torch.Tensor):
            raise HookError(f"module output is a {type(output).__name__}, not a tensor or tuple")
        new = fn(x)
        if new is None:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new

    return hook


def _on_input(fn: Callable[[torch.Tensor], torch.Tensor | None]) -> Callable:
    def hook(_module, args, kwargs):
        if args:
            new = fn(args[0])
            return None if new is None else ((new, *args[1:]), kwargs)
        if "hidden_states" not in kwargs:
            raise HookError("module was called without a positional input or hidden_states=")
        new = fn(kwargs["hidden_states"])
        return None if new is None else (args, {**kwargs, "hidden_states": new})

    return hook


def _register(point: HookPoint, fn: Callable[[torch.Tensor], torch.Tensor | None]):
    if point.where == "output":
        return point.module.register_forward_hook(_on_output(fn))
    if point.where == "input":
        return point.module.register_forward_pre_hook(_on_input(fn), with_kwargs=True)
    return register_pattern_hook(point.module, fn)


def _stop(_x: torch.Tensor) -> None:
    raise StopForward


class _ModuleResolver:
    def __init__(self, root: nn.Module):
        self.root = root

    def hook_point(self, site: AnySite) -> HookPoint:
        if not isinstance(site, ModuleSite):
            raise HookError(f"{site}: typed sites need an lmscope.LM; on a plain module use ModuleSite(path)")
        try:
            module = self.root.get_submodule(site.path)
        except AttributeError as err:
            raise HookError(f"no module {site.path!r} in {type(self.root).__name__}") from err
        return HookPoint(module, site.where, site.pos_dim)


@contextmanager
def hooks(target: Resolver | nn.Module, *ops: Op, stop_after: AnySite | None = None) -> Iterator[ActivationCache]:
    """Apply ``ops`` during forward passes run inside the block; yield the cache of captured values."""
    resolver = target if hasattr(target, "hook_point") else _ModuleResolver(target)  # type: ignore[arg-type]
    cache, handles = ActivationCache(), []
    try:
        for op in ops:
            point = resolver.hook_point(op.site)
            handles.append(_register(point, lambda x, op=op, d=point.pos_dim: _run_op(op, x, d, cache)))
        if stop_after is not None:
            handles.append(_register(resolver.hook_point(stop_after), _stop))
        yield cache
    except StopForward:
        pass
    finally:
        for handle in reversed(handles):
            handle.remove()
