"""The paper's model (Cunningham et al. 2023): c = ReLU(M x + b), x_hat = M^T c, rows of M of unit norm.

Loss: the mean squared error over coordinates + alpha ||c||_1 (mean over rows). M is normalised in the forward
pass, so its rows are unit vectors wherever it is used; there is no decoder bias (it is zero in the SAELens layout).
"""

from __future__ import annotations

import torch
from torch import nn

from lmscope.methods.sae.arch.base import SparseAutoencoder
from lmscope.methods.sae.config import SaeConfig


class TiedSAE(SparseAutoencoder):
    """Tied ReLU + L1 with a unit-norm dictionary."""

    name = "tied"

    def __init__(self, cfg: SaeConfig):
        super().__init__(cfg)
        self.M = nn.Parameter(torch.nn.functional.normalize(torch.randn(self.d_sae, self.d_in), dim=-1))
        self.bias = nn.Parameter(torch.zeros(self.d_sae))
        self.register_buffer("zero_b_dec", torch.zeros(self.d_in))

    @property
    def W_dec(self) -> torch.Tensor:  # noqa: N802
        """The dictionary, rows normalised: (d_sae, d_in)."""
        return self.M / self.M.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    @property
    def W_enc(self) -> torch.Tensor:  # noqa: N802
        """The encoder is the dictionary's transpose: (d_in, d_sae)."""
        return self.W_dec.T

    @property
    def b_enc(self) -> torch.Tensor:
        """The encoder bias b."""
        return self.bias

    @property
    def b_dec(self) -> torch.Tensor:
        """Zero: the paper's model has no decoder bias."""
        return self.zero_b_dec

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """M x + b."""
        return x @ self.W_enc + self.bias

    def loss_terms(self, x, x_hat, codes, pre, l1_scale, dead):
        """(mean squared error over coordinates, alpha x mean L1 of the codes)."""
        return (x - x_hat).pow(2).mean(), l1_scale * self.cfg.l1_coefficient * codes.abs().sum(-1).mean()

    @torch.no_grad()
    def load_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        """M from W_dec, b from b_enc (W_enc must be W_dec^T and b_dec zero for a tied model)."""
        self.M.copy_(tensors["W_dec"])
        self.bias.copy_(tensors["b_enc"])

    def init_b_dec(self, value: torch.Tensor) -> None:
        """The tied model has no decoder bias."""
