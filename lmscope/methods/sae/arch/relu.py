"""Untied ReLU + L1 (Anthropic, "Circuits Updates", April 2024).

c = ReLU(W_enc (x - b_dec) + b_enc), x_hat = W_dec c + b_dec; loss = |x - x_hat|^2 + lambda sum_i c_i |W_dec,i|
(the L1 penalty weighted by each decoder row's norm, so the decoder norms are free). Decoder rows start as random
directions of norm 0.1 and the encoder as their transpose.
"""

from __future__ import annotations

import torch

from lmscope.methods.sae.arch.base import squared_error
from lmscope.methods.sae.arch.l1 import L1SAE
from lmscope.methods.sae.arch.sparse import L1Step
from lmscope.methods.sae.config import SaeConfig
from lmscope.methods.sae.registry import register_sae_class


@register_sae_class
class ReluSAE(L1SAE):
    """Untied ReLU with a decoder-norm-weighted L1 penalty."""

    name = "relu"
    default_lr = 5e-5
    default_l1 = 5.0  # Anthropic's lambda (inputs at norm sqrt(d))
    saelens_architecture = "standard"

    @classmethod
    def from_saelens(cls, architecture, cfg, tensors, d_in, d_sae):
        """SAELens' standard SAE (ReLU; any L1 it was trained with)."""
        return SaeConfig("relu", d_in=d_in, width=d_sae) if architecture == "standard" else None

    def __init__(self, cfg: SaeConfig):
        super().__init__(cfg)
        self.init_untied(0.1)

    def reconstruction_error(self, x, x_hat):
        """|x - x_hat|^2, mean over rows."""
        return squared_error(x, x_hat)

    def l1_penalty(self, step: L1Step, n: int) -> torch.Tensor:
        """Mean over rows of sum_i c_i |W_dec,i|."""
        norms = self.W_dec.norm(dim=-1)  # (d_sae,)
        if step.vals is None:
            return step.codes.sum(0) @ norms / n
        return (step.vals * norms[step.cols]).sum() / n
