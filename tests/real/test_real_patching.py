"""IOI on the real bundled SmolLM2 (slow): pair construction, the model's answers and activation patching, pinned.

Numbers measured on CPU, float32, torch 2.13.0; tolerances cover BLAS differences.
"""

import pytest
import torch

import lmscope
from lmscope.data.ioi import ioi_pairs, read_ioi
from lmscope.methods.patching import PatchConfig, activation_patching, attribution_patching, logit_diff
from lmscope.methods.patching.units import unit_effects
from lmscope.model.units import coordinates

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lm():
    return lmscope.load("smollm2-135m")


def test_ioi_pair_and_where_the_task_lives(lm, shared_data):
    pairs = ioi_pairs(lm.tokenizer, read_ioi(shared_data / "ioi.json"))
    assert len(pairs) == 841
    p = pairs[0]
    assert (p.io, p.s, p.c, p.s2_position) == ("Deanna", "Eleanor", "Martha", 14)
    metric = logit_diff(p.io_id, p.s_id)
    cfg = PatchConfig(kinds=("resid_pre",), layers=(0, 15, 27), batch_size=64)
    exact = activation_patching(lm, p.clean, p.corrupted, metric, cfg)
    assert exact.clean_metric == pytest.approx(4.0502, abs=2e-3)
    assert exact.corrupted_metric == pytest.approx(0.7182, abs=2e-3)
    s = exact.scores["resid_pre"]
    assert float(s[0, 14]) == pytest.approx(1.0, abs=1e-4)  # the only differing embedding
    assert float(s[15, 14]) == pytest.approx(0.95, abs=0.02)  # layer 15: the task still sits at S2
    assert float(s[27, -1]) == pytest.approx(0.90, abs=0.02)  # layer 27: it has moved to the last position
    approx = attribution_patching(lm, p.clean, p.corrupted, metric, cfg)
    assert float(approx.scores["resid_pre"][15, 14]) == pytest.approx(0.022, abs=0.01)  # far from exact (0.95)
    dims = coordinates("dims", lmscope.Site(15, "resid_post"), lm.d_model)
    ids = [lm.tokenize(t)["input_ids"] for t in (p.clean, p.corrupted)]
    fx = unit_effects(lm, *ids, metric, dims, 14, batch_size=96)
    assert int((fx.delta != 0).sum()) == lm.d_model and torch.isfinite(fx.exact).all()
