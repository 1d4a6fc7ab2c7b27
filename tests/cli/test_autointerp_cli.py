"""``lmscope autointerp`` end to end on a tiny local model folder, against a local OpenAI-compatible stub server."""

import json
import shutil

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


def test_the_report_of_a_run_part_way(tiny_llama_dir, corpus, stub, tmp_path, capsys):
    stub.answer = lambda messages: "the word Paris" if "summarize" in messages[0]["content"] else "No"
    run, argv = tmp_path / "ai", ["--model", str(tiny_llama_dir), "autointerp", "--layer", "1", "--kinds", "pca",
                                  "random", "--n-units", "3", "--corpus", corpus, "--split", "all", "--tokens", "512",
                                  "--seq-len", "16", "--fit-tokens", "256", "--backend", "http", "--base-url",
                                  stub.url, "--api-model", "stub", "--out", str(tmp_path / "ai")]
    assert main(argv) == 0
    finished = json.loads((run / "autointerp.json").read_text())
    lines = (run / "records.jsonl").read_text().splitlines(keepends=True)
    shutil.rmtree(run / "result")  # as a run killed after three units, in the middle of the fourth's line
    (run / "records.jsonl").write_text("".join(lines[:3]) + lines[3][:20])
    capsys.readouterr()
    assert main(["autointerp", "report", str(run), "--out", str(tmp_path / "so-far")]) == 0
    assert "Unfinished run: 3 of up to 6 units" in capsys.readouterr().out
    summary = json.loads((tmp_path / "so-far" / "autointerp.json").read_text())
    assert summary["progress"] == {"scored": 3, "planned": 6, "by_kind": {"pca": [2, 3], "random": [1, 3]}}
    assert summary["sites"] == finished["sites"] and summary["explainer"] == "stub"
    assert "Unfinished run" in (tmp_path / "so-far" / "report.html").read_text()
    assert (run / "records.jsonl").read_text().endswith(lines[3][:20])  # read, never repaired: the run may be writing
    shutil.copytree(run, tmp_path / "foreign")
    (tmp_path / "foreign" / "records.jsonl").write_text('{"step": 1}\n')  # not a unit's record
    assert main(["autointerp", "report", str(tmp_path / "foreign"), "--out", str(tmp_path / "o")]) == 2
    assert "record 1 is not an autointerp unit's" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert main(["autointerp", "report", str(run), str(run), "--out", str(tmp_path / "o")]) == 2  # the same kinds
    assert "name each run's SAE features apart" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert main(argv) == 0  # the run resumes and finishes: its report is the run's own result
    assert main(["autointerp", "report", str(run), "--out", str(tmp_path / "done")]) == 0
    done = json.loads((tmp_path / "done" / "autointerp.json").read_text())
    assert done["progress"] is None and done["kinds"] == finished["kinds"]


def test_bad_input_to_the_report(tiny_llama_dir, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(json.dumps({"model": "m", "settings": {}}))  # another command's run
    for folder, out, said in [(tmp_path / "missing", tmp_path / "o1", "holds no autointerp run"),
                              (tmp_path / "run", tmp_path / "o2", "holds no autointerp run"),
                              (tmp_path / "run", tmp_path / "run", "a run's own folder")]:
        assert main(["autointerp", "report", str(folder), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0] and "Traceback" not in err[0], err
        assert out == tmp_path / "run" or not out.exists()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["run.json"]  # the run's folder untouched
