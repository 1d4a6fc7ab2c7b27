"""The MLP output weights that weight edits change (ROME, neuron edits), and a digest that ties an edit to them."""

from __future__ import annotations

import hashlib

import torch

from lmscope.model.lm import LM
from lmscope.model.sites import Site
from lmscope.model.weights import is_conv1d


def w_out_param(lm: LM, layer: int) -> tuple[torch.nn.Parameter, bool]:
    """W_out's parameter at ``layer`` and whether it is stored transposed, (d_mlp, d_model) (transformers' Conv1D)."""
    module = lm.layout.part(lm.check(Site(layer, "mlp_out")).layer, "mlp_out_proj")
    return module.weight, is_conv1d(module)


def weight_digest(lm: LM, layer: int) -> str:
    """A short hash of W_out at ``layer``: an edit applies only to the weights it was computed on."""
    w = w_out_param(lm, layer)[0].detach().flatten()
    return hashlib.sha256(w[:: max(1, w.numel() // 65536)].float().cpu().numpy().tobytes()).hexdigest()[:16]
