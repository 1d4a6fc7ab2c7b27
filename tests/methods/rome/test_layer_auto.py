"""ROME's layer="auto": the documented peak of a bundled model, dataset traces recorded per run, and which one wins."""

from types import SimpleNamespace

import pytest

import lmscope
from lmscope.methods.rome import RomeConfig, resolve_layer
from lmscope.methods.trace import TraceConfig, trace_dataset
from lmscope.model import peaks
from lmscope.model.peaks import Peak, auto_layer, best_peak, record_peak
from tests.helpers import tiny_lm


@pytest.fixture(autouse=True)
def private_store(store_dir):
    return store_dir


def test_bundled_models_ship_their_peak():
    smollm2 = SimpleNamespace(name="smollm2-135m")
    assert best_peak(smollm2) == Peak(4, 70, "bundled")
    assert best_peak(SimpleNamespace(name="gemma3-270m")).layer == 5
    assert "shipped with the model" in auto_layer(smollm2).describe()


def test_small_or_all_facts_runs_do_not_replace_the_documented_peak():
    smollm2 = SimpleNamespace(name="smollm2-135m")
    record_peak("smollm2-135m", Peak(14, 6, "/runs/limit6-all", only_predicted=False))
    record_peak("smollm2-135m", Peak(12, 9, "/runs/limit20"))
    assert best_peak(smollm2).layer == 4
    record_peak("smollm2-135m", Peak(6, 300, "/runs/full"))
    assert best_peak(smollm2) == Peak(6, 300, "/runs/full")
    record_peak("smollm2-135m", Peak(7, 310, "/runs/full"))  # the same run again replaces its record
    assert [p.source for p in peaks.recorded_peaks("smollm2-135m")] == ["/runs/limit6-all", "/runs/limit20",
                                                                        "/runs/full"]
    assert "over 310 facts (the dataset trace in /runs/full)" in auto_layer(smollm2).describe()


def test_unknown_model_without_a_trace_is_one_clear_error():
    lm = tiny_lm()
    with pytest.raises(lmscope.InputError, match="trace-dataset"):
        resolve_layer(lm, RomeConfig(layer="auto"))


def test_a_finished_trace_dataset_run_sets_auto_and_says_so(tmp_path):
    lm = tiny_lm(sharp=True)
    facts = [lmscope.data.KnownFact(0, "Eiffel Tower", "Paris", "{}", "The Eiffel Tower is in the city of", "", "")]
    cfg = TraceConfig(samples=2, window=2, noise=1.0, kinds=("mlp",))
    result = trace_dataset(lm, facts, tmp_path / "all", cfg, only_predicted=False)
    with pytest.raises(lmscope.InputError, match="trace-dataset"):  # an --all-facts run is not ROME's protocol
        resolve_layer(lm, RomeConfig(layer="auto"))
    record_peak(lm.name, Peak(result.peak("mlp")[0], result.n_kept, str(tmp_path / "all")))
    layer, source = resolve_layer(lm, RomeConfig(layer="auto"))
    assert layer == result.peak("mlp")[0] and str(tmp_path / "all") in source
    assert resolve_layer(lm, RomeConfig(layer=2)) == (2, "given")
