"""The dataset commands under torchrun (2 CPU ranks, gloo): each rank takes its share, rank 0 merges, and the
result equals a single-process run."""

import json
import os
import socket
import subprocess
import sys

import torch

from lmscope import load_result
from lmscope.cli import main
from tests.helpers import ROOT


def torchrun(argv: list[str], tmp_path) -> subprocess.CompletedProcess:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "LMSCOPE_CACHE": str(tmp_path / "store")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "lmscope", *argv]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_trace_dataset_and_eval_edits_on_two_ranks(tiny_llama_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LMSCOPE_CACHE", str(tmp_path / "store"))
    facts = [{"known_id": i, "subject": s, "attribute": "Paris", "template": "{} is in the", "prompt": p,
              "prediction": "", "relation_id": "P1"}
             for i, (s, p) in enumerate([("Eiffel Tower", "The Eiffel Tower is in the city of"),
                                         ("France", "The capital of France is"), ("Paris", "Paris is the city of"),
                                         ("Tower", "The Tower is located in the")])]
    (tmp_path / "known.json").write_text(json.dumps(facts))
    trace = ["--model", str(tiny_llama_dir), "trace-dataset", "--data", str(tmp_path / "known.json"), "--all-facts",
             "--samples", "2", "--noise", "1.0", "--kinds", "hidden", "mlp"]
    done = torchrun([*trace, "--out", str(tmp_path / "ddp")], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((tmp_path / "ddp").glob("records.rank*of2.jsonl"))) == 2
    assert main([*trace, "--out", str(tmp_path / "one")]) == 0
    ddp, one = load_result(tmp_path / "ddp" / "result"), load_result(tmp_path / "one" / "result")
    assert ddp.n_kept == one.n_kept == 4 and abs(ddp.ate - one.ate) < 1e-6
    for kind in one.aie:  # the ranks run with 1 thread each: the same numbers up to float rounding
        torch.testing.assert_close(ddp.aie[kind], one.aie[kind], atol=1e-6, rtol=1e-5)

    rows = [{"case_id": i, "prompt": f"the capital of {s}", "subject": s, "target_new": "Tower",
             "ground_truth": "Paris", "rephrase_prompt": f"the city of {s}", "locality_prompt": "the city of a",
             "locality_ground_truth": "Paris"} for i, s in enumerate(["France", "Eiffel", "Paris"])]
    (tmp_path / "cf.json").write_text(json.dumps(rows))
    corpus = tmp_path / "texts.txt"
    corpus.write_text("\n\n".join(f"The capital of France is Paris w{i} the city of" for i in range(20)))
    edits = ["--model", str(tiny_llama_dir), "eval-edits", "--data", str(tmp_path / "cf.json"), "--layer", "1",
             "--contexts-per-length", "1", "--v-steps", "3", "--stats-corpus", str(corpus), "--stats-samples", "20",
             "--gen-tokens", "3"]
    done = torchrun([*edits, "--out", str(tmp_path / "cf-ddp")], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert main([*edits, "--out", str(tmp_path / "cf-one")]) == 0
    ddp = json.loads((tmp_path / "cf-ddp" / "metrics.json").read_text())
    one = json.loads((tmp_path / "cf-one" / "metrics.json").read_text())
    assert ddp["records"] == one["records"] == 3 and ddp["edited"].keys() == one["edited"].keys()
    for key, value in one["edited"].items():
        assert abs(ddp["edited"][key] - value) < 1e-3, key
