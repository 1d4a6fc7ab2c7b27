"""The command line on the bundled model (slow): the README's demo, and ROME's layer "auto" on a fresh store."""

import json

import pytest

import lmscope
from lmscope import RomeConfig
from lmscope.cli import main
from lmscope.methods.rome import resolve_layer

pytestmark = pytest.mark.slow


def test_default_lens_on_bundled_model(tmp_path, capsys):
    out = tmp_path / "lens"
    assert main(["lens", "--out", str(out)]) == 0
    summary = json.loads((out / "lens.json").read_text())
    assert summary["model"] == "smollm2-135m" and summary["layers"][-1]["top_last"][0][0] == " Paris"
    assert (out / "report.html").stat().st_size > 10_000


def test_auto_layer_on_a_fresh_store_is_the_documented_peak(tmp_path, monkeypatch):
    lm = lmscope.load("smollm2-135m")  # loaded from the usual store; the peaks are looked up in an empty one
    monkeypatch.setenv("LMSCOPE_CACHE", str(tmp_path / "fresh"))
    layer, source = resolve_layer(lm, RomeConfig())
    assert layer == 4 and "70 facts" in source and "shipped with the model" in source
