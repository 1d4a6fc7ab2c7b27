"""Gated SAE (Rajamanoharan et al. 2024): which latents fire and how strongly, from two paths sharing W_enc.

pi_gate = (x - b_dec) W_enc + b_gate, pi_mag = (x - b_dec) (W_enc * exp(r_mag)) + b_mag; c = 1[pi_gate > 0] *
ReLU(pi_mag); x_hat = c W_dec + b_dec. Loss: |x - x_hat|^2 + lambda sum_i ReLU(pi_gate)_i |W_dec,i| + |x -
(ReLU(pi_gate) W_dec' + b_dec')|^2, the last with frozen (stop-gradient) copies of the decoder, as in the paper
(SAELens lets that term's gradient reach the decoder). b_gate is stored as ``b_enc`` (the encoder bias every
architecture has); SAELens names it ``b_gate``. Decoder rows start at norm 0.1 and are left free.
"""

from __future__ import annotations

import torch
from torch import nn

from lmscope.methods.sae.arch.base import ForwardOutput, SparseAutoencoder, squared_error
from lmscope.methods.sae.config import SaeConfig
from lmscope.methods.sae.registry import register_sae_class


@register_sae_class
class GatedSAE(SparseAutoencoder):
    """Gated SAE: a gate path and a magnitude path with a shared encoder."""

    name = "gated"
    default_lr = 5e-5
    default_l1 = 5.0  # as lmscope's ReLU + L1 (inputs at norm sqrt(d)); sweep it
    sweep_knob = "l1_coefficient"
    saelens_architecture = "gated"

    @classmethod
    def from_saelens(cls, architecture, cfg, tensors, d_in, d_sae):
        """SAELens' gated SAE (b_gate read as b_enc by the loader)."""
        return SaeConfig("gated", d_in=d_in, width=d_sae) if architecture == "gated" else None

    def __init__(self, cfg: SaeConfig):
        super().__init__(cfg)
        self.init_untied(0.1)
        self.r_mag = nn.Parameter(torch.zeros(self.d_sae))
        self.b_mag = nn.Parameter(torch.zeros(self.d_sae))

    def paths(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pi_gate, pi_mag) of scaled inputs x (n, d_in): each (n, d_sae)."""
        x_c = x - self.b_dec if self.centers_input else x
        return x_c @ self.W_enc + self.b_enc, x_c @ (self.W_enc * self.r_mag.exp()) + self.b_mag

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The codes 1[pi_gate > 0] ReLU(pi_mag): (..., d_in) -> (..., d_sae)."""
        if x.shape[-1] != self.d_in:
            return super().encode(x)  # the width error
        gate, mag = self.paths(x * self.input_scale)
        return (gate > 0) * torch.relu(mag)

    def forward(self, x: torch.Tensor, l1_scale: float = 1.0, dead: torch.Tensor | None = None,
                target: torch.Tensor | None = None) -> ForwardOutput:
        """The paper's loss: reconstruction + L1 of the gate (decoder-norm weighted) + the frozen-decoder term."""
        x, y = self.scaled(x, target)
        gate, mag = self.paths(x)
        codes = (gate > 0) * torch.relu(mag)
        y_hat = codes @ self.W_dec + self.b_dec + self.skip_term(x)
        active = torch.relu(gate)
        frozen = active @ self.W_dec.detach() + self.b_dec.detach() + self.skip_term(x)
        recon = squared_error(y, y_hat) + squared_error(y, frozen)
        sparsity = l1_scale * self.cfg.l1_coefficient * (active * self.W_dec.norm(dim=-1)).sum(-1).mean()
        return ForwardOutput(y_hat / self.out_scale, codes, recon + sparsity, recon, sparsity)

    def weight_names(self) -> tuple[str, ...]:
        """The base tensors and the magnitude path's r_mag and b_mag."""
        return (*super().weight_names(), "r_mag", "b_mag")

    def saelens_export(self, weights):
        """SAELens names the gate's bias b_gate and has no b_enc."""
        weights = dict(weights)
        weights["b_gate"] = weights.pop("b_enc")
        return weights, {}

    @classmethod
    def saelens_import(cls, tensors):
        """SAELens' b_gate is lmscope's b_enc."""
        return {("b_enc" if k == "b_gate" else k): v for k, v in tensors.items()}
