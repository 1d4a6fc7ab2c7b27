"""What an attribution graph needs of each layer's transcoder, in the model's own units.

A :class:`LayerTranscoder` reads the MLP's input (``Site(l, "mlp_in")``) and predicts its output
(``Site(l, "mlp_out")``): ``output(x) = act(x E^T + b_enc) D + b_dec (+ x W_skip^T)``. :func:`from_coder` takes any
saved transcoder lmscope loads (lmscope, SAELens, sparsify, Gemma Scope 2: their scales folded in);
:func:`exact_mlp` makes the true MLP one (its neurons are the features, the error is zero up to rounding): the
oracle of the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lmscope.model.hooks import capture
from lmscope.model.lm import LM
from lmscope.model.sites import Site
from lmscope.model.weights import linear_weight


@dataclass
class LayerTranscoder:
    """One layer's transcoder: activations of the MLP input, decoder rows and encoder directions."""

    layer: int
    encode: Callable[[torch.Tensor], torch.Tensor]  # (..., d_in) MLP input -> (..., n) feature activations
    decoder: torch.Tensor  # (n, d_out) what a feature of activation 1 writes to the MLP output
    bias: torch.Tensor  # (d_out,)
    encoder: torch.Tensor  # (n, d_in) a feature's pre-activation direction on the MLP input
    skip: torch.Tensor | None = None  # (d_out, d_in) a skip transcoder's linear term
    name: str = ""

    @property
    def width(self) -> int:
        """Number of features."""
        return self.decoder.shape[0]

    def skip_term(self, x: torch.Tensor) -> torch.Tensor | float:
        """X W_skip^T (..., d_out), or 0."""
        return x @ self.skip.T.to(x.dtype) if self.skip is not None else 0.0

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted MLP output (..., d_out)."""
        return self.encode(x) @ self.decoder.to(x.dtype) + self.bias.to(x.dtype) + self.skip_term(x)


def from_coder(coder, layer: int) -> LayerTranscoder:
    """A saved transcoder (lmscope's SparseAutoencoder with ``transcoder`` set) in the model's units."""
    s_in, s_out = coder.input_scale.detach().float(), coder.out_scale.detach().float()
    skip = coder.W_skip.detach().float() * s_in / s_out if coder.cfg.skip else None

    def encode(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return coder.encode(x.float()).to(x.dtype)

    return LayerTranscoder(layer, encode, coder.W_dec.detach().float() / s_out, coder.b_dec.detach().float() / s_out,
                           coder.W_enc.detach().float().T * s_in, skip, getattr(coder, "name", ""))


def exact_mlp(lm: LM, layer: int) -> LayerTranscoder:
    """The true MLP of ``layer`` as a transcoder: its neurons (the input of W_out) are the features.

    Where the family adds a norm after the MLP (Gemma 2 / 3), the MLP output site is that norm's output and this
    "transcoder" misses it: its error is then the norm's doing, not zero.
    """
    mlp = lm.layout.part(layer, "mlp")
    out_proj = lm.layout.part(layer, "mlp_out_proj")
    site = Site(layer, "mlp_key")

    def encode(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), lm.hooks(capture(site)) as cache:
            mlp(x[None] if x.ndim == 2 else x)
        return cache[site][0] if x.ndim == 2 else cache[site]

    bias = getattr(out_proj, "bias", None)
    w_out = lm.W_out(layer).detach().float()  # (d_model, d_mlp)
    return LayerTranscoder(layer, encode, w_out.T.contiguous(),
                           bias.detach().float() if bias is not None else torch.zeros(w_out.shape[0]),
                           linear_weight(lm.layout.part(layer, "mlp_in")).detach().float(), None, "exact MLP")
