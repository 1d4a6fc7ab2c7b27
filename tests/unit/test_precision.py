"""bfloat16 only where it is fast: the probe, and the options that want bfloat16 for speed (autocast, an explainer's
weights) falling back to float32 on a CPU that emulates it, with one warning; an explicit --dtype kept."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from lmscope.methods.autointerp.config import ScoreConfig
from lmscope.methods.lens import TuneConfig, train_tuned_lens
from lmscope.methods.sae import SaeConfig, TrainConfig, fit_saes
from lmscope.model import precision
from lmscope.model.loading import load
from tests.helpers import tiny_lm


@pytest.fixture
def slow(monkeypatch):
    """A CPU whose bfloat16 matmuls take 30x as long as float32 ones."""
    monkeypatch.setattr(precision, "bfloat16_slowdown", lambda device_type="cpu": 30.0)


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(precision, "bfloat16_slowdown", lambda device_type="cpu": 0.8)


def test_the_cpu_probe_measures_a_ratio():
    precision.bfloat16_slowdown.cache_clear()
    ratio = precision.bfloat16_slowdown("cpu")
    assert math.isfinite(ratio) and ratio > 0
    assert precision.bfloat16_slowdown("cpu") == ratio  # measured once per process
    assert torch.get_num_threads() >= 1  # the probe gives the threads back


def test_devices_that_are_not_measured():
    assert precision.bfloat16_slowdown("meta") == 1.0
    if not torch.cuda.is_available():
        assert precision.bfloat16_slowdown("cuda") == float("inf")  # no GPU: never "fast"


def test_the_machine_is_named_with_its_bfloat16_and_threads(slow, fast, monkeypatch):
    monkeypatch.setattr(precision, "cpu_name", lambda: "Some CPU")
    monkeypatch.setattr(precision, "bfloat16_slowdown", lambda device_type="cpu": 30.0)
    threads = torch.get_num_threads()
    plural = "s" if threads > 1 else ""
    assert precision.machine("cpu") == f"Some CPU (no native bfloat16), {threads} thread{plural}"
    monkeypatch.setattr(precision, "bfloat16_slowdown", lambda device_type="cpu": 0.8)
    assert precision.machine(torch.device("cpu")) == f"Some CPU (native bfloat16), {threads} thread{plural}"
    assert precision.machine("meta") == "meta"
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert precision.machine("cpu") == "Some CPU (native bfloat16), 1 thread"
    monkeypatch.undo()
    assert precision.cpu_name()  # /proc/cpuinfo's model name here, else the machine type


def test_autocast_is_left_off_where_bfloat16_is_slow(slow, caplog):
    with caplog.at_level(logging.WARNING):
        assert precision.fast_autocast(True, "cpu", "sae train") is False
    assert "sae train" in caplog.text and "30x" in caplog.text
    caplog.clear()
    assert precision.fast_autocast(False, "cpu", "sae train") is False
    assert caplog.text == ""  # nothing asked, nothing said
    assert precision.speed_dtype("cpu") == "float32"


def test_autocast_stays_where_bfloat16_is_fast(fast, caplog):
    with caplog.at_level(logging.WARNING):
        assert precision.fast_autocast(True, "cpu", "sae train") is True
    assert caplog.text == ""
    assert precision.speed_dtype("cpu") == "bfloat16"


def test_the_tuned_lens_records_the_autocast_it_ran_with(slow):
    cfg = TuneConfig(corpus="wiki", tokens=256, seq_len=32, batch_size=4, tokens_per_step=128, autocast=True)
    lens = train_tuned_lens(tiny_lm(), cfg)
    assert lens.training["config"]["autocast"] is False


def test_sae_training_runs_float32_on_a_slow_cpu(slow, monkeypatch):
    seen = []
    real = torch.autocast

    def spy(device_type, dtype=None, enabled=True, **kw):
        seen.append(enabled)
        return real(device_type, dtype=dtype, enabled=enabled, **kw)

    monkeypatch.setattr(torch, "autocast", spy)
    x = torch.randn(64, 16)
    fit_saes([SaeConfig(architecture="topk", d_in=16, ratio=2, k=4)], [x, x], TrainConfig(autocast=True))
    assert seen and not any(seen)


def test_an_explicit_bfloat16_model_is_kept_with_a_warning(slow, tiny_llama_dir, caplog):
    with caplog.at_level(logging.WARNING):
        lm = load(str(tiny_llama_dir), dtype="bfloat16")
    assert next(lm.model.parameters()).dtype == torch.bfloat16
    assert "--dtype float32 runs faster here" in caplog.text


def test_the_explainer_dtype_defaults_to_auto():
    assert ScoreConfig().explainer_dtype == "auto"
