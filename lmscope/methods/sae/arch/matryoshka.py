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

from lmscope.methods.sae.arch.base import squared_error
from lmscope.methods.sae.arch.batchtopk import BatchTopKSAE
from lmscope.methods.sae.arch.sparse import sparse_decode
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

    def extra_reconstruction(self, y, y_hat, rows, cols, vals) -> torch.Tensor:
        """Every smaller prefix's squared error, from the sparse codes: y_hat without the latents from w on."""
        extra = y.new_zeros(())
        for w in self.prefix_ends():
            later = cols >= w  # rows stay ascending under a mask
            extra = extra + squared_error(y, y_hat - sparse_decode(rows[later], cols[later], vals[later], self.W_dec,
                                                                   y.shape[0]))
        return extra
