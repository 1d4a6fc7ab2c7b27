"""Using an SAE inside the model: splice its reconstruction into a site, read features, clamp / ablate / add one.

Every function returns hook operations for :meth:`lmscope.LM.hooks`, so an SAE works inside every method that
takes ops or runs under hooks (a trace or a lens through an SAE). With ``keep_error=True`` the site keeps the
SAE's error term: it becomes x + (x_hat' - x_hat), exactly x when nothing is changed, so only the intervention on
the features moves the model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lmscope.methods.sae.arch import SparseAutoencoder
from lmscope.model.hooks import Index, Op, apply
from lmscope.model.sites import Site

Edit = Callable[[torch.Tensor], torch.Tensor]  # codes (..., d_sae) -> changed codes


def _rewrite(sae: SparseAutoencoder, edit: Edit | None, keep_error: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    sae.eval()

    def fn(x: torch.Tensor) -> torch.Tensor:  # (batch, pos, d_in)
        with torch.no_grad() if not x.requires_grad else torch.enable_grad():
            codes = sae.encode(x.float())
            new = sae.decode(edit(codes) if edit else codes)
            if keep_error:
                return x if edit is None else (x + (new - sae.decode(codes))).to(x.dtype)
            return new.to(x.dtype)

    return fn


def splice(sae: SparseAutoencoder, site: Site, *, keep_error: bool = False, positions: Index = None,
           rows: Index = None, edit: Edit | None = None) -> Op:
    """Replace the activation at ``site`` by the SAE's reconstruction (of the edited features, if ``edit``)."""
    return apply(site, _rewrite(sae, edit, keep_error), positions=positions, rows=rows)


def set_feature(sae: SparseAutoencoder, site: Site, feature: int, value: float, *, mode: str = "clamp",
                keep_error: bool = True, positions: Index = None) -> Op:
    """Clamp a feature to ``value`` (``mode="clamp"``), add ``value`` to it (``"add"``), or zero it (``"ablate"``)."""
    def edit(codes: torch.Tensor) -> torch.Tensor:
        codes = codes.clone()
        if mode == "add":
            codes[..., feature] += value
        else:
            codes[..., feature] = 0.0 if mode == "ablate" else value
        return codes

    return splice(sae, site, keep_error=keep_error, positions=positions, edit=edit)


def feature_acts(sae: SparseAutoencoder, x: torch.Tensor) -> torch.Tensor:
    """The SAE's feature activations of captured activations x (..., d_in): (..., d_sae)."""
    sae.eval()
    with torch.no_grad():
        return sae.encode(x.float())


def splice_transcoder(sae: SparseAutoencoder, site: Site, target: Site) -> tuple[Op, Op]:
    """Ops that replace a transcoder's ``target`` (the MLP's output) by its prediction from ``site`` (its input).

    The first op reads the input as it passes, the second writes the prediction (skip term included); give both,
    in this order, to one :meth:`lmscope.LM.hooks` block.
    """
    sae.eval()
    seen: dict[str, torch.Tensor] = {}

    def read(x: torch.Tensor) -> torch.Tensor:  # (batch, pos, d_in), left unchanged
        seen["x"] = x
        return x

    def write(y: torch.Tensor) -> torch.Tensor:  # (batch, pos, d_out)
        with torch.no_grad() if not seen["x"].requires_grad else torch.enable_grad():
            return sae.output(seen["x"].float()).to(y.dtype)

    return apply(site, read), apply(target, write)
