"""``lmscope graph`` end to end on a tiny model with a folder of transcoders (as ``sae train --transcoder`` writes
them), and its bad input: one line, exit 2, nothing written."""

from __future__ import annotations

import json

import pytest
import torch

from lmscope.cli import main
from lmscope.methods.sae import SaeConfig, build_sae, save_sae
from tests.cli.test_bad_input_sae import one_line_error

PROMPT = "The capital of France is"


def transcoders(folder, layers=(0, 1, 2), d_in=32, transcoder=True, skip=True):
    for layer in layers:
        torch.manual_seed(layer)
        coder = build_sae(SaeConfig("topk", d_in=d_in, width=64, k=4, transcoder=transcoder, skip=skip and transcoder))
        save_sae(coder, folder / f"mlp_in.{layer}-mlp_out.{layer}", site=f"mlp_in.{layer}", model="tiny-llama",
                 target=f"mlp_out.{layer}" if transcoder else "")
    return folder


def test_graph_end_to_end(tiny_llama_dir, tmp_path, capsys):
    folder = transcoders(tmp_path / "tc")
    out = tmp_path / "graph"
    assert main(["--model", str(tiny_llama_dir), "graph", PROMPT, "--transcoders", str(folder), "--batch-size", "16",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "replacement" in printed and "completeness" in printed
    for name in ("graph.json", "graph-circuit-tracer.json", "graph.png", "report.html", "result/cfg.json"):
        assert (out / name).is_file(), name
    assert "carried by" in printed  # head loadings of the strongest edges (10 by default)
    assert "Head loadings" in (out / "report.html").read_text()
    summary = json.loads((out / "graph.json").read_text())
    assert summary["features_explored"] == summary["active_features"] > 0
    assert 0 <= summary["scores"]["completeness"] <= 1 and 0 <= summary["scores"]["replacement"] <= 1
    doc = json.loads((out / "graph-circuit-tracer.json").read_text())
    assert doc["metadata"]["prompt"] == PROMPT and doc["nodes"] and doc["links"]
    # one layer only: the others are error nodes, and a target given by the user
    only = tmp_path / "one"
    transcoders(only, layers=(1,))
    assert main(["--model", str(tiny_llama_dir), "graph", PROMPT, "--transcoders", str(only / "mlp_in.1-mlp_out.1"),
                 "--target", "Paris", "--out", str(tmp_path / "g1")]) == 0
    assert json.loads((tmp_path / "g1" / "graph.json").read_text())["targets"][0]["token"] == "Paris"


@pytest.mark.parametrize("make, extra, fragment", [
    (lambda p: p / "missing", [], "not a folder"),
    (lambda p: (p / "empty").mkdir() or p / "empty", [], "no transcoder"),
    (lambda p: transcoders(p / "sae", transcoder=False), [], "not a transcoder"),
    (lambda p: transcoders(p / "wide", d_in=16), [], "width"),
    (lambda p: transcoders(p / "ok"), ["--target", "Paris France"], "one token"),
    (lambda p: transcoders(p / "ok"), ["--max-memory-gb", "0.000001"], "max-memory-gb"),
    (lambda p: transcoders(p / "ok"), ["--node-threshold", "2"], "node-threshold"),
    (lambda p: transcoders(p / "ok"), ["--head-loadings", "-1"], "head-loadings"),
])
def test_bad_input(make, extra, fragment, tiny_llama_dir, tmp_path, capsys):
    folder = make(tmp_path)
    out = tmp_path / "out"
    one_line_error(capsys, main(["--model", str(tiny_llama_dir), "graph", PROMPT, "--transcoders", str(folder),
                                 *extra, "--out", str(out)]), fragment)
    assert not out.exists()
