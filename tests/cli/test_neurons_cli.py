"""``lmscope neurons`` and ``lmscope neuron-edit`` end to end on a tiny local model folder."""

import json

import pytest

from lmscope.cli import main
from lmscope.io import load_result


def test_neurons_with_ablation_and_sensitivity(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "n"
    argv = ["--model", str(tiny_llama_dir), "neurons", "The capital of France is", "--target", "Paris", "--top-k",
            "4", "--ablate", "--random-sets", "2", "--new-tokens", "2", "--same", "Paris is the capital of",
            "--other", "Eiffel Tower is located in", "--out", str(out)]
    assert main(argv) == 0
    for name in ("neurons.json", "neurons.png", "report.html", "result/cfg.json", "ablation/ablation.json",
                 "sensitivity/sensitivity.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "neurons.json").read_text())
    assert summary["prompts"][0]["target"] == "Paris" and len(summary["prompts"][0]["top"]) == 4
    assert load_result(out / "ablation" / "result").random_after.shape == (1, 2)
    text = capsys.readouterr().out
    assert "Spearman" in text and "random sets" in text and "specificity" in text


@pytest.mark.parametrize("argv, message", [
    (["neurons", "x", "--top-k", "999"], "larger than"),  # more than the tiny model has
    (["neurons", "x", "--top-k", "100000"], "top-k must be in 1..1,000"),
    (["neurons", "  "], "empty prompt"),
    (["neurons", "x", "--method", "magic"], "method"),
    (["neuron-edit", "--layer", "9", "--neuron", "1", "--v0", "Paris", "--v1", "France"], "out of range"),
    (["neuron-edit", "--layer", "0", "--neuron", "1", "--v0", "Paris", "--v1", "Paris"], "same token"),
])
def test_neuron_errors_are_one_line(argv, message, tiny_llama_dir, tmp_path, capsys):
    assert main(["--model", str(tiny_llama_dir), *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()  # transformers' loading bar may come first when the model loads
    assert message in err.splitlines()[-1] and "Traceback" not in err


def test_neuron_edit_end_to_end(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "e"
    argv = ["--model", str(tiny_llama_dir), "neuron-edit", "--layer", "2", "--neuron", "5", "--v0", "Paris",
            "--v1", "France", "--prompt", "The capital of France is", "--neighbours", "Eiffel Tower is",
            "--new-tokens", "2", "--out", str(out)]
    assert main(argv) == 0
    checks = json.loads((out / "checks.json").read_text())
    assert [c["kind"] for c in checks["checks"]] == ["edit", "neighbour"]
    assert load_result(out / "edit").layer == 2 and (out / "report.html").is_file()
    assert "restored" in capsys.readouterr().out
