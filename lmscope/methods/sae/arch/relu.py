"""Untied ReLU + L1 (Anthropic, "Circuits Updates", April 2024).

c = ReLU(W_enc (x - b_dec) + b_enc), x_hat = W_dec c + b_dec; loss = |x - x_hat|^2 + lambda sum_i c_i |W_dec,i|
(the L1 penalty weighted by each decoder row's norm, so the decoder norms are free). Decoder rows start as random
directions of norm 0.1 and the encoder as their transpose.
"""

from __future__ import annotations

import torch
from torch import nn

from lmscope.methods.sae.arch.base import SparseAutoencoder, squared_error
from lmscope.methods.sae.config import SaeConfig


class ReluSAE(SparseAutoencoder):
    """Untied ReLU with a decoder-norm-weighted L1 penalty."""

    name = "relu"

    def __init__(self, cfg: SaeConfig):
        super().__init__(cfg)
        w_dec = 0.1 * torch.nn.functional.normalize(torch.randn(self.d_sae, self.d_in), dim=-1)
        self.W_dec = nn.Parameter(w_dec)
        self.W_enc = nn.Parameter(w_dec.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(self.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(self.d_in))

    def loss_terms(self, x, x_hat, codes, pre, l1_scale, dead):
        """(squared error, lambda x mean of sum_i c_i |W_dec,i|)."""
        l1 = (codes * self.W_dec.norm(dim=-1)).sum(-1).mean()
        return squared_error(x, x_hat), l1_scale * self.cfg.l1_coefficient * l1
