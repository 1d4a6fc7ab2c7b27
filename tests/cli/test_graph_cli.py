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
        with torch.no_grad():  # as if trained: a new transcoder's decoder starts at zero
            coder.W_dec.copy_(torch.nn.functional.normalize(torch.randn_like(coder.W_dec), dim=-1))
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
    assert summary["cost"]["seconds_estimate"] > 0 and summary["cost"]["memory_bytes"] > 0  # made before the run
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


def test_graph_eval_and_check_end_to_end(tiny_llama_dir, tmp_path, capsys):
    from tests.helpers import write_corpus

    folder = transcoders(tmp_path / "tc")
    corpus = write_corpus(tmp_path / "text.txt", extra_words=20, lengths=(30, 60), docs=30)
    out = tmp_path / "eval"
    assert main(["--model", str(tiny_llama_dir), "graph", "eval", "--transcoders", str(folder), "--corpus", corpus,
                 "--split", "all", "--tokens", "256", "--seq-len", "32", "--out", str(out)]) == 0
    assert "CE recovered" in capsys.readouterr().out
    summary = json.loads((out / "replacement.json").read_text())
    assert [row["layer"] for row in summary["layers"]] == [0, 1, 2] and summary["tokens"] > 0
    assert (out / "replacement.png").is_file() and (out / "report.html").is_file()
    graph = tmp_path / "graph"
    assert main(["--model", str(tiny_llama_dir), "graph", PROMPT, "--transcoders", str(folder), "--head-loadings",
                 "0", "--out", str(graph)]) == 0
    check = tmp_path / "check"
    assert main(["--model", str(tiny_llama_dir), "graph", "check", str(graph), "--top", "3", "--out",
                 str(check)]) == 0  # the transcoders: the folder the graph records
    printed = capsys.readouterr().out
    assert "correlation with the real model" in printed
    rows = json.loads((check / "check.json").read_text())["rows"]
    assert 0 < len(rows) <= 3 and {"direct", "total", "measured", "measured_replacement"} <= set(rows[0])
    assert (check / "check.png").is_file() and "Intervention check" in (check / "report.html").read_text()


def test_graph_check_refuses_what_is_not_its_graph(tiny_llama_dir, tmp_path, capsys):
    folder = transcoders(tmp_path / "tc")
    lens = tmp_path / "lens"
    assert main(["--model", str(tiny_llama_dir), "lens", PROMPT, "--out", str(lens)]) == 0
    one_line_error(capsys, main(["--model", str(tiny_llama_dir), "graph", "check", str(lens), "--transcoders",
                                 str(folder), "--out", str(tmp_path / "c")]), "not an attribution graph")
    graph = tmp_path / "graph"
    assert main(["--model", str(tiny_llama_dir), "graph", PROMPT, "--transcoders", str(folder), "--head-loadings",
                 "0", "--out", str(graph)]) == 0
    one_line_error(capsys, main(["--model", str(tiny_llama_dir), "graph", "check", str(graph), "--top", "0",
                                 "--out", str(tmp_path / "c")]), "--top")
    assert not (tmp_path / "c").exists()
