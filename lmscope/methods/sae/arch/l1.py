"""The L1 variants' training forward: one encoder matmul, then the sparse or the dense route (:mod:`.sparse`).

Subclasses give their reconstruction error and their L1 penalty from either route; outside training (or without
gradients) the plain :meth:`SparseAutoencoder.forward` runs.
"""

from __future__ import annotations

import torch

from lmscope.methods.sae.arch.base import ForwardOutput, SparseAutoencoder
from lmscope.methods.sae.arch.sparse import SPARSE_BELOW, L1Step, l1_training_step, pre_activations


class L1SAE(SparseAutoencoder):
    """Base of the ReLU + L1 architectures; ``sparse_below``: the density under which a step goes sparse."""

    sparse_below: float = SPARSE_BELOW
    resamples = True
    sweep_knob = "l1_coefficient"

    def reconstruction_error(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """The reconstruction term of the loss (unweighted)."""
        raise NotImplementedError

    def l1_penalty(self, step: L1Step, n: int) -> torch.Tensor:
        """The sparsity penalty of the codes of ``step`` (unweighted, mean over its n rows)."""
        raise NotImplementedError

    def loss_terms(self, x, x_hat, codes, pre, l1_scale, dead):
        """(reconstruction error, L1 coefficient x warm-up x penalty)."""
        step = L1Step(x_hat, codes, None, None, None)
        return self.reconstruction_error(x, x_hat), l1_scale * self.cfg.l1_coefficient * self.l1_penalty(step, len(x))

    def forward(self, x: torch.Tensor, l1_scale: float = 1.0, dead: torch.Tensor | None = None,
                target: torch.Tensor | None = None) -> ForwardOutput:
        """As :meth:`SparseAutoencoder.forward`; in training with gradients, sparse once few latents fire."""
        if not (self.training and torch.is_grad_enabled()):
            return super().forward(x, l1_scale, dead, target)
        x, y = self.scaled(x, target)
        p = pre_activations(x, self.input_shift(), self.W_enc, self.b_enc)
        step = l1_training_step(p, self.W_dec, self.b_dec, self.sparse_below)
        y_hat = step.x_hat + self.skip_term(x)
        recon = self.reconstruction_error(y, y_hat)
        sparsity = l1_scale * self.cfg.l1_coefficient * self.l1_penalty(step._replace(x_hat=y_hat), x.shape[0])
        return ForwardOutput(y_hat / self.out_scale, step.codes, recon + sparsity, recon, sparsity)
