"""TopK (Gao et al. 2024): keep the k largest pre-activations (after ReLU), the rest 0; no L1.

Dead latents are revived by AuxK: e = x - x_hat is reconstructed from the k_aux largest pre-activations of the
dead latents alone (e_hat = c_aux W_dec), adding aux_coefficient |e - e_hat|^2 to the loss. Decoder rows keep unit
norm (gradient projected, rows renormalised after every step); the encoder starts as the decoder's transpose.
"""

from __future__ import annotations

import torch
from torch import nn

from lmscope.methods.sae.arch.base import SparseAutoencoder, squared_error
from lmscope.methods.sae.config import SaeConfig


def keep_top(values: torch.Tensor, k: int) -> torch.Tensor:
    """``values`` with all but the k largest of each row set to 0: (n, m) -> (n, m)."""
    top = values.topk(min(k, values.shape[-1]), dim=-1)
    return torch.zeros_like(values).scatter_(-1, top.indices, top.values)


class TopKSAE(SparseAutoencoder):
    """TopK with the AuxK dead-latent loss."""

    name = "topk"
    unit_decoder = True

    def __init__(self, cfg: SaeConfig):
        super().__init__(cfg)
        w_dec = torch.nn.functional.normalize(torch.randn(self.d_sae, self.d_in), dim=-1)
        self.W_dec = nn.Parameter(w_dec)
        self.W_enc = nn.Parameter(w_dec.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(self.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(self.d_in))

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """The k largest of ReLU(pre) per row."""
        return keep_top(torch.relu(pre), self.cfg.k)

    def aux_loss(self, x: torch.Tensor, x_hat: torch.Tensor, pre: torch.Tensor, dead: torch.Tensor | None):
        """aux_coefficient x |e - e_hat|^2, e_hat from the k_aux largest dead pre-activations (0 if none is dead)."""
        if dead is None or not bool(dead.any()):
            return x.new_zeros(())
        dead_pre = torch.where(dead, pre, torch.full_like(pre, -torch.inf))
        codes = keep_top(dead_pre, min(self.cfg.k_aux, int(dead.sum())))
        e_hat = torch.relu(codes).nan_to_num(0.0) @ self.W_dec
        return self.cfg.aux_coefficient * squared_error((x - x_hat).detach(), e_hat)

    def loss_terms(self, x, x_hat, codes, pre, l1_scale, dead):
        """(squared error, AuxK term)."""
        return squared_error(x, x_hat), self.aux_loss(x, x_hat, pre, dead)
