"""Patching single units (SAE features, neurons, dimensions) at one site and position, against runs by hand."""

import pytest
import torch

from lmscope import Site, apply
from lmscope.methods.patching import logit_diff
from lmscope.methods.patching.units import unit_effects
from lmscope.methods.sae import SaeConfig, build_sae
from lmscope.model.units import coordinates
from tests.helpers import tiny_lm

CLEAN = torch.tensor([[5, 17, 3, 44, 9, 60, 7, 21]])
CORRUPT = CLEAN.clone()
CORRUPT[0, 2] = 40
METRIC = logit_diff(9, 60)
POS = 4


@pytest.mark.parametrize("kind", ["neurons", "dims", "sae"])
def test_each_unit_equals_its_run_by_hand(kind, family):
    lm = tiny_lm(family, sharp=True)
    if kind == "neurons":
        basis = coordinates("neurons", Site(1, "mlp_key"), lm.d_mlp)
    elif kind == "dims":
        basis = coordinates("dims", Site(1, "resid_post"), lm.d_model)
    else:
        sae = build_sae(SaeConfig("topk", d_in=lm.d_model, ratio=2, k=4), seed=0)
        basis = sae.units(Site(1, "resid_post"))
    fx = unit_effects(lm, CLEAN, CORRUPT, METRIC, basis, POS, batch_size=5)
    active = fx.delta.nonzero().flatten()
    assert len(active) > 0 and torch.all(fx.exact[fx.delta == 0] == 0)
    with torch.no_grad():
        base = float(METRIC(lm(CORRUPT))[0])
    for u in active[:3].tolist():
        direction = fx.delta[u] * basis.directions(torch.tensor([u]))[0]

        def fn(x, direction=direction):
            x = x.clone()
            x[:, POS] += direction.to(x.dtype)
            return x

        with torch.no_grad(), lm.hooks(apply(basis.site, fn)):
            expected = float(METRIC(lm(CORRUPT))[0]) - base
        assert abs(float(fx.exact[u]) - expected) < 1e-4 * max(1.0, abs(expected)), (u, float(fx.exact[u]), expected)
    assert fx.corrupted_metric == pytest.approx(base, abs=1e-5)
    a, e = fx.attribution[active], fx.exact[active]
    assert torch.sign(a).eq(torch.sign(e)).float().mean() > 0.5 or e.abs().max() < 1e-4
