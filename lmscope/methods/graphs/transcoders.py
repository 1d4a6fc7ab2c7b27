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

    def decode(self, codes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The predicted MLP output (..., d_out) from feature activations ``codes`` of inputs ``x``."""
        return codes @ self.decoder.to(x.dtype) + self.bias.to(x.dtype) + self.skip_term(x)

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted MLP output (..., d_out)."""
        return self.decode(self.encode(x), x)


def from_coder(coder, layer: int) -> LayerTranscoder:
    """A saved transcoder (lmscope's SparseAutoencoder with ``transcoder`` set) in the model's units.

    Its input and output scales are folded into its weights in place (what it computes is unchanged), so the
    layer's decoder and encoder are the coder's own tensors, not copies: 30 of smollm2's take ~640 MB, not twice that.
    """
    fold_scales(coder)
    skip = coder.W_skip.detach() if coder.cfg.skip else None

    def encode(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return coder.encode(x.float()).to(x.dtype)

    return LayerTranscoder(layer, encode, coder.W_dec.detach().float(), coder.b_dec.detach().float(),
                           coder.W_enc.detach().float().T, skip, getattr(coder, "name", ""))


@torch.no_grad()
def fold_scales(coder) -> None:
    """Fold a transcoder's input scale into W_enc (and W_skip) and its output scale into W_dec, b_dec (and W_skip).

    Pre-activations and outputs are unchanged (thresholds too); both scales become 1.
    """
    s_in, s_out = float(coder.input_scale), float(coder.out_scale)
    if s_in == 1.0 and s_out == 1.0:
        return
    coder.W_enc.mul_(s_in)
    coder.W_dec.div_(s_out)
    coder.b_dec.div_(s_out)
    if coder.cfg.skip:
        coder.W_skip.mul_(s_in / s_out)
    coder.input_scale.fill_(1.0)
    coder.out_scale.fill_(1.0)


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
