"""JumpReLU (Rajamanoharan et al. 2024; Gemma Scope): a learned threshold per latent, trained for L0 directly.

c_i = z_i H(z_i - theta_i), z = (x - b_dec) W_enc + b_enc; x_hat = c W_dec + b_dec. The step H has no gradient, so
training uses straight-through estimators with a rectangle kernel of bandwidth epsilon: d c_i / d theta_i =
-(theta_i / epsilon) K((z_i - theta_i) / epsilon), and the L0 term sum_i H(z_i - theta_i) gives d / d theta_i =
-(1 / epsilon) K(...) (the paper's: the pre-activations get no gradient through the kernel; with
``jumprelu_ste_to_input`` they get its negation too, as Anthropic's 2025 setup). The sparsity term is
lambda x that L0 (``jumprelu_loss="step"``, the paper's), Anthropic's tanh(s c_i |W_dec,i|) (``"tanh"``), or Gemma
Scope 2's quadratic 2 / L0* (L0 - L0*)^2 around a target L0* (``"quadratic"``). The threshold is a parameter of
its own kept >= 0 after every step (as SAELens 6: a log-parameterised threshold barely moves from a small start
in a short run); decoder rows start at norm 0.1 (SAELens' decoder_init_norm: at the start half the latents fire) and
are left free, as in SAELens. Saved as SAELens' ``jumprelu``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lmscope.errors import ArtifactError
from lmscope.methods.sae.arch.base import SparseAutoencoder, squared_error
from lmscope.methods.sae.config import SaeConfig
from lmscope.methods.sae.registry import register_sae_class


def rectangle(u: torch.Tensor) -> torch.Tensor:
    """The kernel K(u) = 1 on (-1/2, 1/2), 0 elsewhere."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    """The JumpReLU z H(z - theta) and its straight-through gradients.

    To z where the latent fires (plus the kernel's with ``to_input``), to theta through the kernel.
    """

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, theta: torch.Tensor, bandwidth: float, to_input: bool) -> torch.Tensor:
        ctx.save_for_backward(z, theta)
        ctx.bandwidth, ctx.to_input = bandwidth, to_input
        return z * (z > theta)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        z, theta = ctx.saved_tensors
        ste = (theta / ctx.bandwidth) * rectangle((z - theta) / ctx.bandwidth) * grad  # (n, d_sae)
        d_z = (z > theta) * grad + (ste if ctx.to_input else 0)
        return d_z, -ste.sum(0), None, None


class _Step(torch.autograd.Function):
    """H(z - theta): to theta through the kernel; to z only with ``to_input`` (the kernel's negation)."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, theta: torch.Tensor, bandwidth: float, to_input: bool) -> torch.Tensor:
        ctx.save_for_backward(z, theta)
        ctx.bandwidth, ctx.to_input = bandwidth, to_input
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        z, theta = ctx.saved_tensors
        ste = (1.0 / ctx.bandwidth) * rectangle((z - theta) / ctx.bandwidth) * grad  # (n, d_sae)
        return (ste if ctx.to_input else None), -ste.sum(0), None, None


@register_sae_class
class JumpReLUSAE(SparseAutoencoder):
    """JumpReLU with a threshold per latent and an L0 sparsity term."""

    name = "jumprelu"
    default_lr = 7e-5  # the paper's Adam learning rate
    sweep_knob = "l0_coefficient"
    saelens_architecture = "jumprelu"

    @classmethod
    def from_saelens(cls, architecture, cfg, tensors, d_in, d_sae):
        """SAELens' (or Gemma Scope's) jumprelu: a threshold for every latent."""
        if architecture != "jumprelu" or "threshold" not in tensors:
            return None
        if tuple(tensors["threshold"].shape) != (d_sae,):
            raise ValueError(f"threshold has shape {tuple(tensors['threshold'].shape)}, expected ({d_sae},)")
        return SaeConfig("jumprelu", d_in=d_in, width=d_sae)

    def __init__(self, cfg: SaeConfig):
        super().__init__(cfg)
        self.init_untied(0.1)  # SAELens' decoder_init_norm: few latents' worth of output while half of them fire
        self.threshold = nn.Parameter(torch.full((self.d_sae,), cfg.jumprelu_init_threshold))

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """The codes z H(z - theta); at inference ReLU'd first, as SAELens (a negative threshold passes no z < 0).

        Training keeps theta >= 0 (:meth:`constrain`) and applies no ReLU: its zero gradient would stop the kernel's
        gradient to the thresholds of the latents just below theirs.
        """
        theta = self.threshold.to(pre.dtype)
        if self.training and torch.is_grad_enabled():
            return _JumpReLU.apply(pre, theta, self.cfg.jumprelu_bandwidth, self.cfg.jumprelu_ste_to_input)
        return torch.relu(pre) * (pre > theta)

    def sparsity(self, pre: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """The unweighted sparsity term, mean over rows."""
        theta, mode = self.threshold.to(pre.dtype), self.cfg.jumprelu_loss
        if mode == "tanh":
            return torch.tanh(self.cfg.jumprelu_tanh_scale * codes * self.W_dec.norm(dim=-1)).sum(-1).mean()
        l0 = _Step.apply(pre, theta, self.cfg.jumprelu_bandwidth, self.cfg.jumprelu_ste_to_input).sum(-1)  # (n,)
        if mode == "quadratic":
            target = self.cfg.target_l0
            return (2 / target * (l0 - target).pow(2)).mean()
        return l0.mean()

    def loss_terms(self, x, x_hat, codes, pre, l1_scale, dead):
        """(squared error, warm-up x lambda x the sparsity term)."""
        return squared_error(x, x_hat), l1_scale * self.cfg.l0_coefficient * self.sparsity(pre, codes)

    @torch.no_grad()
    def constrain(self) -> None:
        """Thresholds kept >= 0 (projected, so a latent at 0 can still move)."""
        self.threshold.clamp_(min=0.0)

    def weights(self) -> dict[str, torch.Tensor]:
        """The SAELens-layout tensors and every latent's threshold."""
        return {**super().weights(), "threshold": self.threshold.detach().clone()}

    @torch.no_grad()
    def load_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        """Weights and every latent's threshold (shape checked: one ArtifactError naming it)."""
        theta = tensors.get("threshold")
        if theta is None or theta.numel() != self.d_sae:
            got = "no threshold" if theta is None else f"a threshold of shape {tuple(theta.shape)}"
            raise ArtifactError(f"a jumprelu SAE needs a threshold of shape ({self.d_sae},); the weights have {got}")
        super().load_weights(tensors)
        self.threshold.copy_(theta.reshape(self.d_sae))
