"""``lmscope autointerp`` end to end on a tiny local model folder, against a local OpenAI-compatible stub server."""

import json

from lmscope.cli import main
from lmscope.methods.sae import SaeConfig, build_sae, save_sae
from tests.methods.autointerp import fixtures

corpus, stub = fixtures.corpus, fixtures.stub  # the autointerp tests' fixtures, used here by name


def test_cli_with_an_http_endpoint(tiny_llama_dir, corpus, stub, tmp_path, capsys):
    sae = build_sae(SaeConfig("topk", d_in=32, ratio=2, k=4), seed=0)
    save_sae(sae, tmp_path / "sae", site="resid_post.1", model="tiny-llama")  # the model it is used on
    stub.answer = lambda messages: "the word Paris" if "summarize" in messages[0]["content"] else "No"
    argv = ["--model", str(tiny_llama_dir), "autointerp", "--sae", str(tmp_path / "sae"), "--kinds", "sae", "pca",
            "--n-units", "2", "--corpus", corpus, "--split", "all", "--tokens", "1024", "--seq-len", "16",
            "--fit-tokens", "256", "--backend", "http", "--base-url", stub.url, "--api-model", "stub",
            "--out", str(tmp_path / "ai")]
    assert main(argv) == 0
    for name in ("autointerp.json", "scores.png", "report.html", "records.jsonl", "result/cfg.json"):
        assert (tmp_path / "ai" / name).is_file(), name
    summary = json.loads((tmp_path / "ai" / "autointerp.json").read_text())
    assert summary["kinds"]["sae"]["malformed"] > 0  # "No" is not a simulation: counted, not a crash
    sent = len(stub.requests)
    assert main(argv) == 0 and len(stub.requests) == sent  # finished units and cached answers: nothing re-sent
    assert main([*argv[:-2], "--base-url", "http://127.0.0.1:9/v1", "--retries", "0", "--n-units", "3",
                 "--out", str(tmp_path / "ai2")]) == 2
    assert "rerun the same command to resume" in capsys.readouterr().err
