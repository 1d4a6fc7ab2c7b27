"""Units of a site: the one interface every method that reads or patches single units takes.

A :class:`Units` reads coordinates a(x) from a site's activations x, (n, d_site) -> (n, units), and gives the
direction D_u along which unit u writes into the site (moving a_u by 1 adds D_u). SAE and transcoder features,
MLP neurons, residual-stream dimensions, and random / PCA / ICA directions are all Units: patching
(``lmscope.methods.patching``) patches them, autointerp explains them, and a method never reaches into an SAE's
weights (an SAE gives its features with ``sae.units(site)``). A Units can be narrowed to some of its units
(:meth:`Units.select`), whose ids it keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from lmscope.model.sites import Site

Encode = Callable[[torch.Tensor], torch.Tensor]  # (n, d_site) -> (n, units)
Directions = Callable[[torch.Tensor], torch.Tensor]  # unit ids (k,) -> (k, d_site)


@dataclass(frozen=True)
class Units:
    """Some units of one site: how to read their activations and the direction each writes."""

    name: str  # unique within a run: "sae", "neurons", "dims", "pca", ...
    site: Site
    n_units: int  # the whole basis (ids run 0 .. n_units - 1)
    encode: Encode  # (n, d_site) -> (n, len(ids)) for a selection, else (n, n_units)
    directions: Directions | None = None  # None: the units read but do not write (no patching)
    ids: tuple[int, ...] | None = None  # this selection's units, in encode's column order (None: all)

    @property
    def unit_ids(self) -> list[int]:
        """The units this object reads, in column order."""
        return list(self.ids) if self.ids is not None else list(range(self.n_units))

    def select(self, ids: Sequence[int]) -> Units:
        """The same units narrowed to ``ids`` (their columns, in that order); directions keep the basis' ids."""
        ids = tuple(int(i) for i in ids)
        index = torch.tensor(ids, dtype=torch.long)
        base = self.encode
        return replace(self, encode=lambda x: base(x)[:, index.to(x.device)], ids=ids)


def coordinates(name: str, site: Site, width: int) -> Units:
    """The coordinates of the site itself: MLP neurons at ``mlp_key``, dimensions at a residual site."""
    def directions(idx: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(idx, width).float()
    return Units(name, site, width, lambda x: x.float(), directions)


def projections(name: str, site: Site, mean: torch.Tensor, readout: torch.Tensor) -> Units:
    """Units read as projections of the centred activation, a = (x - mean) @ readout.T (readout: (n, d_site)).

    Unit u writes along column u of the readout's pseudo-inverse, so that patching it moves a_u alone (for
    orthonormal rows, as principal components, that is the row itself).
    """
    def encode(x: torch.Tensor) -> torch.Tensor:
        return (x - mean.to(x.device)) @ readout.to(x.device).T

    def directions(idx: torch.Tensor) -> torch.Tensor:
        return torch.linalg.pinv(readout.double()).T[idx.cpu()].float()

    return Units(name, site, readout.shape[0], encode, directions)
