"""Patching single units of one site at one position: SAE features, MLP neurons or residual-stream dimensions.

The units are a :class:`lmscope.model.units.Units`: it reads coordinates a(x) from a site's activation x (d,) and
gives the direction D_u each unit writes: an SAE feature's decoder row (its error term kept), a neuron's or a
dimension's unit vector. Patching unit u from
clean to corrupted sets x_corrupted + (a_clean,u - a_corrupted,u) D_u at the site; units whose coordinate is the same
in both runs have no effect and are not run. Attribution estimates every unit at once: (a_clean,u - a_corrupted,u)
(D_u . g), with g the gradient of the metric at the site (one backward pass). The patched runs start from the
corrupted run's residual stream just below the site (the blocks underneath are the same in every row).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from lmscope.errors import ConfigError
from lmscope.methods.patching.config import Metric
from lmscope.model.hooks import Op, apply, gradient_taps
from lmscope.model.lm import LM
from lmscope.model.sites import Site
from lmscope.model.surgery import staggered_start
from lmscope.model.units import Units


@dataclass
class UnitEffects:
    """Per unit: the coordinate change, the exact patched metric change and its attribution estimate."""

    delta: torch.Tensor  # (n_units,) a_clean - a_corrupted
    exact: torch.Tensor  # (n_units,) m(patched) - m(corrupted); 0 where delta is 0
    attribution: torch.Tensor  # (n_units,) first-order estimate of ``exact``
    clean_metric: float
    corrupted_metric: float


def _shift(site: Site, position: int, rows_shift: torch.Tensor) -> Op:
    """Add row r's shift (d,) at ``position`` of row r."""
    def fn(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[:, position] += rows_shift.to(x.dtype)
        return x
    return apply(site, fn)


def _gradient(lm: LM, ids: torch.Tensor, metric: Metric, site: Site, position: int) -> tuple[float, torch.Tensor]:
    """(metric, d metric / d activation at ``site`` and ``position``) of one run."""
    taps: dict = {}
    with torch.enable_grad(), lm.hooks(*gradient_taps([site], taps)):
        m = metric(lm(ids))[0]
        (grad,) = torch.autograd.grad(m, [taps[site][1]])
    return float(m.detach()), grad[0, position].float()


def unit_effects(lm: LM, clean_ids: torch.Tensor, corr_ids: torch.Tensor, metric: Metric, basis: Units,
                 position: int, batch_size: int = 64) -> UnitEffects:
    """Exact and attribution effects of patching each unit of ``basis`` at ``position`` (ids: (1, pos))."""
    if basis.directions is None or basis.ids is not None:
        raise ConfigError(f"units {basis.name!r} cannot be patched one by one: patching takes a whole basis that "
                          "writes (directions)")
    site = lm.check(basis.site)
    start = site.layer if site.kind == "resid_post" else site.layer - 1  # the block whose output rows start from
    below = [Site(start, "resid_post")] if start >= 0 else []
    with torch.no_grad():
        clean_logits, clean = lm.run_with_cache(clean_ids, [site])
        _, corr = lm.run_with_cache(corr_ids, [site, *below])
        delta = (basis.encode(clean[site][0, position].float()[None])
                 - basis.encode(corr[site][0, position].float()[None]))[0]  # (n_units,)
    corr_m, grad = _gradient(lm, corr_ids, metric, site, position)
    exact, attribution = torch.zeros(basis.n_units), torch.zeros(basis.n_units)
    with torch.no_grad():
        for chunk in delta.nonzero().flatten().split(batch_size):
            shift = delta[chunk, None] * basis.directions(chunk)  # (k, d)
            attribution[chunk.cpu()] = (shift @ grad).cpu()
            skip = staggered_start(lm, [start] * len(chunk), corr[below[0]].expand(len(chunk), -1, -1)) \
                if below else contextlib.nullcontext()
            with skip, lm.hooks(_shift(site, position, shift)):
                exact[chunk.cpu()] = metric(lm(corr_ids.expand(len(chunk), -1))).float().cpu() - corr_m
    return UnitEffects(delta.cpu(), exact, attribution, float(metric(clean_logits)[0]), corr_m)
