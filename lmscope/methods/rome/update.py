"""Step 4 of ROME: the rank-one update, the edit as data (:class:`RomeEdit`), and applying / undoing it.

W_out <- W_out + right u^T with u = C^-1 k* / |C^-1 k*| (C = E[k k^T]) and right = (v* - W_out k) / (u . k), k the
key of the unprefixed prompt, so that the edited layer maps k to v*. An edit saves as cfg.json + safetensors and
applies to a fresh copy of the model with :func:`apply_edit`; its handle's ``undo()`` restores the weights bit for
bit (:func:`lmscope.model.weights.patch_weight`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmscope.errors import EditError
from lmscope.io import Result
from lmscope.methods.rome.config import EditRequest, RomeConfig
from lmscope.model.edits import apply_w_out_edit, w_out_param
from lmscope.model.lm import LM
from lmscope.model.weights import EditHandle

__all__ = ["EditHandle", "RomeEdit", "apply_edit", "rank_one_update"]


def rank_one_update(k_star: torch.Tensor, k: torch.Tensor, v: torch.Tensor, v_star: torch.Tensor,
                    second_moment: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(u (d_mlp,), right (d_model,)) with W_out <- W_out + right u^T; the edited W_out maps k to v*."""
    u = k_star.double()
    if second_moment is not None:
        u = torch.linalg.solve(second_moment.to(u.device, torch.float64), u)  # C^-1 k*
    u = (u / u.norm()).float()
    right = (v_star.float() - v.float()) / (u @ k.float())
    return u, right


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
    layer_source: str = ""  # how the layer was chosen (given, or which trace peak "auto" took)

    def delta(self, transposed: bool = False) -> torch.Tensor:
        """The update as a matrix: (d_model, d_mlp), or (d_mlp, d_model) for transposed storage."""
        return torch.outer(self.u, self.right) if transposed else torch.outer(self.right, self.u)

    def summary(self) -> dict:
        """The request, the layer and where it came from, and the v* optimisation."""
        return {"model": self.model, "layer": self.layer, "layer_source": self.layer_source,
                "prompt": self.request.text, "target": self.request.target, "v_steps": len(self.losses),
                "final_loss": self.losses[-1] if self.losses else None, "v0_norm": self.v0_norm,
                "delta_norm": self.delta_norm, "stats_texts": self.stats_texts}


def apply_edit(lm: LM, edit: RomeEdit, check: bool = True) -> EditHandle[RomeEdit]:
    """Apply a (possibly reloaded) edit to ``lm``; it must hold the W_out the edit was computed on."""
    param, _ = w_out_param(lm, edit.layer)
    if param.numel() != edit.u.numel() * edit.right.numel():
        raise EditError(f"this edit was computed on other weights at layer {edit.layer} ({edit.model}); "
                        f"apply it to the model (and the earlier edits) it was made on")
    return apply_w_out_edit(lm, edit.layer, edit, edit.delta, edit.weights if check else None,
                            f"edit ({edit.model})")
