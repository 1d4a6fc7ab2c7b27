"""Matryoshka BatchTopK (Bussmann et al. 2025): nested prefixes of the dictionary, each a reconstruction of its own.

The latents are ordered into prefixes of growing size (``matryoshka_widths``, each the end of a prefix; by default
d_sae / 16, / 8, / 4, / 2 and all of it). Activation is BatchTopK over every latent; the loss adds to the full
reconstruction's squared error that of every smaller prefix, reconstructed from its own latents only (as SAELens'
``matryoshka_batchtopk``: unweighted, each summed over coordinates and averaged over rows), plus AuxK. So the first
latents must reconstruct on their own: general features there, specific ones later. At inference it is BatchTopK
(one threshold), saved for SAELens as a ``jumprelu`` as SAELens saves it.
"""

from __future__ import annotations

import torch

from lmscope.methods.sae.arch.base import ForwardOutput, squared_error
from lmscope.methods.sae.arch.batchtopk import BatchTopKSAE
from lmscope.methods.sae.arch.sparse import dense_codes, pre_activations, sparse_decode, sparse_encode
from lmscope.methods.sae.registry import register_sae_class


@register_sae_class
class MatryoshkaSAE(BatchTopKSAE):
    """Matryoshka BatchTopK: BatchTopK with a reconstruction loss for every nested prefix."""

    name = "matryoshka"

    @classmethod
    def from_saelens(cls, architecture, cfg, tensors, d_in, d_sae):
        """Saved as a jumprelu with one threshold: read as BatchTopK (the same at inference)."""
        return None

    def prefix_ends(self) -> list[int]:
        """The end of every prefix but the whole dictionary, ascending."""
        widths = list(self.cfg.matryoshka_widths) or [self.d_sae // f for f in (16, 8, 4, 2)]
        return sorted({w for w in widths if 0 < w < self.d_sae})

    def loss_terms(self, x, x_hat, codes, pre, l1_scale, dead):
        """(full + every prefix's squared error, AuxK term); prefix w: x_hat without the latents from w on."""
        recon = squared_error(x, x_hat)
        for w in self.prefix_ends():
            recon = recon + squared_error(x, x_hat - codes[:, w:] @ self.W_dec[w:])
        return recon, self.aux_loss(x, x_hat, pre, dead)

    def forward(self, x: torch.Tensor, l1_scale: float = 1.0, dead: torch.Tensor | None = None,
                target: torch.Tensor | None = None) -> ForwardOutput:
        """As BatchTopK; in training with gradients through sparse products, a prefix at a time."""
        if not (self.training and torch.is_grad_enabled()):
            return super().forward(x, l1_scale, dead, target)
        (x, y), n = self.scaled(x, target), x.shape[0]
        p = pre_activations(x, self.input_shift(), self.W_enc, self.b_enc)
        rows, cols = self.select(torch.relu(p.pre))
        vals = torch.relu(sparse_encode(p, rows, cols))
        y_hat = sparse_decode(rows, cols, vals, self.W_dec, n) + self.b_dec + self.skip_term(x)
        recon = squared_error(y, y_hat)
        for w in self.prefix_ends():
            later = cols >= w  # rows stay ascending under a mask
            dropped = sparse_decode(rows[later], cols[later], vals[later], self.W_dec, n)  # the latents from w on
            recon = recon + squared_error(y, y_hat - dropped)
        aux = self._sparse_aux(p, y, y_hat, dead)
        codes = dense_codes(rows, cols, vals, n, self.d_sae)
        return ForwardOutput(y_hat / self.out_scale, codes, recon + aux, recon, aux)
