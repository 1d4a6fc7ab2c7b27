"""Linear weights in any storage layout, and reversible in-place weight edits.

transformers' ``Conv1D`` (GPT-2) stores a linear map transposed, (in, out); ``nn.Linear`` stores (out, in).
:func:`linear_weight` gives the (out, in) view of either, so methods never test for the layout themselves.

:func:`patch_weight` adds a delta to a parameter in place and returns a :class:`WeightPatch` whose ``undo()``
puts the original values back bit for bit. Patches of one parameter stack and are undone last-in, first-out;
the stacks are kept here, keyed by the parameter, not on the model. :class:`EditHandle` pairs any edit record
(a ROME edit, a neuron edit, ...) with the patches that apply it: every weight-editing method returns one.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Generic, TypeVar

import torch
from torch import nn

from lmscope.errors import EditError

# id(parameter) -> the patches applied to it, oldest first. (A WeakKeyDictionary would compare tensors with ==.)
_STACKS: dict[int, list[WeightPatch]] = {}


def _stack(param: nn.Parameter, create: bool = False) -> list[WeightPatch]:
    """The patch stack of ``param`` (dropped when the parameter is garbage-collected)."""
    key = id(param)
    if key not in _STACKS and create:
        _STACKS[key] = []
        weakref.finalize(param, _STACKS.pop, key, None)
    return _STACKS.get(key, [])


def is_linear(module: nn.Module) -> bool:
    """An ``nn.Linear`` or a transformers ``Conv1D``."""
    return isinstance(module, nn.Linear) or is_conv1d(module)


def is_conv1d(module: nn.Module) -> bool:
    """Transformers' ``Conv1D``: a linear layer whose weight is stored (in, out)."""
    return type(module).__name__ == "Conv1D"


def linear_weight(module: nn.Module) -> torch.Tensor:
    """The (out_features, in_features) weight of an ``nn.Linear`` or (as a transposed view) a ``Conv1D``."""
    return module.weight.T if is_conv1d(module) else module.weight


def linear_dims(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of an ``nn.Linear`` or a ``Conv1D``."""
    out_features, in_features = linear_weight(module).shape
    return in_features, out_features


class WeightPatch:
    """One applied delta; ``undo()`` (or leaving a ``with`` block) restores the parameter bit for bit."""

    def __init__(self, param: nn.Parameter, original: torch.Tensor):
        self.param, self._original = param, original
        self.active = True

    def undo(self) -> None:
        """Put the original values back. Patches of one parameter are undone last-in, first-out."""
        if not self.active:
            return
        stack = _stack(self.param)
        if stack and stack[-1] is not self:
            raise EditError("undo the later edits first: edits of one weight are undone in reverse order")
        with torch.no_grad():
            self.param.copy_(self._original)
        stack.pop()
        self.active = False

    def __enter__(self) -> WeightPatch:
        return self

    def __exit__(self, *exc) -> None:
        self.undo()


def patch_weight(param: nn.Parameter, delta: torch.Tensor) -> WeightPatch:
    """Add ``delta`` (the parameter's shape) to ``param`` in place; returns the undo handle."""
    if delta.shape != param.shape:
        raise EditError(f"weight delta of shape {tuple(delta.shape)} does not fit a weight of {tuple(param.shape)}")
    original = param.detach().clone()
    with torch.no_grad():
        param.add_(delta.to(param.device, param.dtype))
    patch = WeightPatch(param, original)
    _stack(param, create=True).append(patch)
    return patch


def has_patches(model: nn.Module) -> bool:
    """Whether any parameter of ``model`` carries an active patch (its weights differ from the loaded ones)."""
    return any(_STACKS.get(id(p)) for p in model.parameters())


R = TypeVar("R")


class EditHandle(Generic[R]):
    """An applied edit: its record (``.edit``, savable) and its weight patches.

    ``undo()`` (or leaving a ``with`` block) restores the weights bit for bit. Edits of one weight are undone
    last-in, first-out.
    """

    def __init__(self, edit: R, patches: WeightPatch | Sequence[WeightPatch]):
        self.edit = edit
        self.patches = (patches,) if isinstance(patches, WeightPatch) else tuple(patches)

    @property
    def patch(self) -> WeightPatch:
        """The (first) weight patch."""
        return self.patches[0]

    @property
    def active(self) -> bool:
        """Whether the edit is still applied."""
        return any(p.active for p in self.patches)

    def undo(self) -> None:
        """Put the original weights back (a multi-weight edit in reverse order)."""
        for patch in reversed(self.patches):
            patch.undo()

    def __enter__(self) -> EditHandle[R]:
        return self

    def __exit__(self, *exc) -> None:
        self.undo()


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Switch off gradients of every parameter for the duration (restored after).

    A loss through the model then computes gradients for its inputs and the trained tensors only, never (at the
    cost of a matmul each) for the model's own weights.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
