"""The command line end to end on a tiny local model folder (and, slow, on the bundled model)."""

import json

import pytest

from lmscope.cli import main


def test_lens_end_to_end(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "lens"
    assert main(["--model", str(tiny_llama_dir), "lens", "The capital of France is", "--top-k", "4",
                 "--out", str(out)]) == 0
    for name in ("lens.json", "lens.png", "lens_curves.png", "report.html", "result/cfg.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "lens.json").read_text())
    assert summary["tokens"] == ["The", "capital", "of", "France", "is"] and summary["top_k"] == 4
    assert len(summary["layers"]) == 4 and len(summary["layers"][-1]["top_last"]) == 4
    assert summary["layers"][-1]["kl_last"] == pytest.approx(0, abs=1e-5)
    assert "wrote" in capsys.readouterr().out


def test_global_options_after_subcommand(tiny_llama_dir, tmp_path, capsys):
    assert main(["info", "--model", str(tiny_llama_dir), "--dtype", "bfloat16"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == "llama" and info["n_layers"] == 3 and "bfloat16" in info["dtype"]


def test_models_lists_registry(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "gemma3-270m" in out and "cache:" in out


@pytest.mark.parametrize("argv, message", [
    (["--model", "no-such-model-xyz", "info"], "unknown model"),
    (["lens", "   "], "empty prompt"),
    (["lens", "x", "--top-k", "0"], "top-k"),
])
def test_errors_are_one_line(argv, message, tiny_llama_dir, capsys, tmp_path):
    if argv[0] == "lens":
        argv = ["--model", str(tiny_llama_dir), *argv, "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_trace_end_to_end(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "trace"
    argv = ["--model", str(tiny_llama_dir), "trace", "The Eiffel Tower is located in the city of", "--subject",
            "The Eiffel Tower", "--samples", "2", "--window", "2", "--noise", "1.0", "--kinds", "hidden", "mlp",
            "--sever", "mlp", "--out", str(out)]
    assert main(argv) == 0
    for name in ("trace.json", "trace_hidden.png", "trace_mlp.png", "trace_hidden_sever_mlp.png", "report.html",
                 "result/cfg.json", "result/tensors.safetensors"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "trace.json").read_text())
    assert summary["subject_range"] == [0, 3] and len(summary["scores"]["mlp"]) == 9
    assert "max P*_restored" in capsys.readouterr().out


def test_trace_subject_not_in_prompt(tiny_llama_dir, capsys, monkeypatch):
    import lmscope.cli.registry as registry

    monkeypatch.setattr(registry, "load", None)  # refused before the model loads: the operation's own check
    assert main(["--model", str(tiny_llama_dir), "trace", "The capital of France is", "--subject", "Rome"]) == 2
    err = capsys.readouterr().err
    assert "the subject 'Rome' is not in the prompt 'The capital of France is'" in err


def test_trace_dataset_end_to_end(tiny_llama_dir, tmp_path, capsys):
    data = tmp_path / "known.json"
    data.write_text(json.dumps([
        {"known_id": 0, "subject": "Eiffel Tower", "attribute": "Paris", "template": "The {} is in the",
         "prompt": "The Eiffel Tower is in the city of", "prediction": "", "relation_id": "P1"},
        {"known_id": 1, "subject": "France", "attribute": "Paris", "template": "The capital of {} is",
         "prompt": "The capital of France is", "prediction": "", "relation_id": "P1"}]))
    out = tmp_path / "ds"
    argv = ["--model", str(tiny_llama_dir), "trace-dataset", "--data", str(data), "--all-facts", "--samples", "2",
            "--noise", "1.0", "--kinds", "hidden", "--out", str(out)]
    assert main(argv) == 0
    assert (out / "aie.png").is_file() and (out / "report.html").is_file() and (out / "result/cfg.json").is_file()
    assert "traced 2 of 2 facts" in capsys.readouterr().out
    assert main(argv) == 0  # resumes: nothing left to do, same result
    assert len((out / "records.jsonl").read_text().splitlines()) == 2


def _texts(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n\n".join(f"The capital of France is Paris w{i} w{i + 1} the city of" for i in range(30)))
    return str(path)


def test_edit_stats_and_eval_end_to_end(tiny_llama_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LMSCOPE_CACHE", str(tmp_path / "cache"))
    corpus, model = _texts(tmp_path), ["--model", str(tiny_llama_dir)]
    assert main([*model, "stats", "--layer", "1", "--samples", "20", "--corpus", corpus]) == 0
    assert "layer 1: E[k k^T] over 20 texts" in capsys.readouterr().out
    fast = ["--layer", "1", "--contexts-per-length", "1", "--v-steps", "4", "--stats-corpus", corpus,
            "--stats-samples", "20"]
    out = tmp_path / "edit"
    assert main([*model, "edit", "--prompt", "the capital of {}", "--subject", "France", "--target", "Tower",
                 "--max-new-tokens", "3", "--out", str(out), *fast]) == 0
    summary = json.loads((out / "edit.json").read_text())
    assert summary["layer"] == 1 and set(summary["before"]) == {"generation", "p_target"}
    assert (out / "result" / "cfg.json").is_file() and "after:" in capsys.readouterr().out  # as the workbench
    rows = [{"case_id": 0, "prompt": "the capital of France", "subject": "France", "target_new": "Tower",
             "ground_truth": "Paris", "rephrase_prompt": "the city of France", "locality_prompt": "the city of a",
             "locality_ground_truth": "Paris"}]
    (tmp_path / "cf.json").write_text(json.dumps(rows))
    ev = tmp_path / "ev"
    assert main([*model, "eval-edits", "--data", str(tmp_path / "cf.json"), "--gen-tokens", "3", "--out", str(ev),
                 *fast]) == 0
    metrics = json.loads((ev / "metrics.json").read_text())
    assert {"ES", "PS", "NS", "S", "GE"} <= set(metrics["edited"]) and (ev / "report.html").is_file()


def test_edit_errors_are_one_line(tiny_llama_dir, capsys):
    assert main(["--model", str(tiny_llama_dir), "edit", "--prompt", "the capital of France", "--subject",
                 "France", "--target", "Tower"]) == 2
    assert "exactly once" in capsys.readouterr().err
    assert main(["--model", str(tiny_llama_dir), "edit", "--prompt", "the capital of {}", "--subject", "France",
                 "--target", "Tower", "--layer", "9"]) == 2
    assert "out of range" in capsys.readouterr().err
