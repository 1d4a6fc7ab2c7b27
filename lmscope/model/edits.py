"""The MLP output weights that weight edits change (ROME, neuron edits), and a digest that ties an edit to them.

Every such edit is applied through :func:`apply_w_out_edit`, which returns the shared undo handle.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TypeVar

import torch

from lmscope.errors import EditError
from lmscope.model.lm import LM
from lmscope.model.sites import Site
from lmscope.model.weights import EditHandle, is_conv1d, patch_weight

R = TypeVar("R")


def w_out_param(lm: LM, layer: int) -> tuple[torch.nn.Parameter, bool]:
    """W_out's parameter at ``layer`` and whether it is stored transposed, (d_mlp, d_model) (transformers' Conv1D)."""
    module = lm.layout.part(lm.check(Site(layer, "mlp_out")).layer, "mlp_out_proj")
    return module.weight, is_conv1d(module)


def weight_digest(lm: LM, layer: int) -> str:
    """A short hash of W_out at ``layer``: an edit applies only to the weights it was computed on."""
    w = w_out_param(lm, layer)[0].detach().flatten()
    return hashlib.sha256(w[:: max(1, w.numel() // 65536)].float().cpu().numpy().tobytes()).hexdigest()[:16]


def apply_w_out_edit(lm: LM, layer: int, edit: R, delta: Callable[[bool], torch.Tensor], digest: str | None,
                     what: str = "edit") -> EditHandle[R]:
    """Add ``delta(transposed)`` (shaped as W_out's parameter) to W_out at ``layer``; returns the undo handle.

    ``digest``: the :func:`weight_digest` the edit was computed on (None: not checked). Another model, or W_out
    changed since by an edit that was not undone, is one :class:`EditError`, before any weight moves.
    """
    param, transposed = w_out_param(lm, layer)
    if digest is not None and weight_digest(lm, layer) != digest:
        raise EditError(f"this {what} was computed on other weights at layer {layer}; apply it to the model (and "
                        "the earlier edits) it was made on")
    return EditHandle(edit, patch_weight(param, delta(transposed)))
