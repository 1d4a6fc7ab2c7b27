"""The lens commands end to end on a tiny local model: train a tuned lens into the store, read a prompt through it,
compare it with the logit lens, import tuned-lens' folders; and their bad input (one line, exit 2, nothing
written)."""

from __future__ import annotations

import json

import pytest

from lmscope.cli import main
from tests.cli.test_bad_input_sae import one_line_error
from tests.helpers import write_corpus
from tests.methods.lens.test_tuned import write_tuned_lens_folder

TRAIN = ["--tokens", "512", "--seq-len", "32", "--batch-size", "4", "--tokens-per-step", "256", "--split", "all"]
EVAL = ["--tokens", "256", "--seq-len", "32", "--batch-size", "4", "--split", "all"]
PROMPT = "The capital of France is"


@pytest.fixture
def corpus(tmp_path) -> list[str]:
    """A small local corpus (the store of these tests is empty: no packaged corpus)."""
    return ["--corpus", write_corpus(tmp_path / "corpus.txt", extra_words=60, lengths=(5, 40), docs=200)]


def test_train_run_eval(tiny_llama_dir, tmp_path, store_dir, corpus, capsys):
    model = ["--model", str(tiny_llama_dir)]
    assert main([*model, "lens", PROMPT, "--readout", "auto", "--out", str(tmp_path / "before")]) == 0
    assert "read through the logit lens" in capsys.readouterr().out  # no lens in the store yet
    assert main([*model, "lens", "train", *TRAIN, *corpus, "--out", str(tmp_path / "train")]) == 0
    out = capsys.readouterr().out
    assert "in the store" in out and "held-out positions of the all split" in out
    assert "part kept (a)" in (tmp_path / "train" / "report.html").read_text()
    for name in ("tuned_lens.json", "training.png", "report.html", "result/cfg.json", "checkpoint.safetensors"):
        assert (tmp_path / "train" / name).is_file(), name
    assert main([*model, "lens", PROMPT, "--out", str(tmp_path / "default")]) == 0
    assert "read through the logit lens" in capsys.readouterr().out  # a prompt's lens: logit unless asked
    assert main([*model, "lens", PROMPT, "--readout", "auto", "--out", str(tmp_path / "after")]) == 0
    assert "read through the tuned lens" in capsys.readouterr().out
    summary = json.loads((tmp_path / "after" / "lens.json").read_text())
    assert summary["readout"]["kind"] == "tuned"
    assert "tuned lens" in (tmp_path / "after" / "report.html").read_text()
    assert main([*model, "lens", PROMPT, "--readout", "logit", "--out", str(tmp_path / "logit")]) == 0
    assert "read through the logit lens" in capsys.readouterr().out
    assert main([*model, "lens", "eval", *EVAL, *corpus, "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "mean KL over the layers" in out and "top-1" in out
    summary = json.loads((tmp_path / "eval" / "lens_eval.json").read_text())
    assert summary["readouts"] == ["logit lens", "tuned lens"] and len(summary["layers"]) == 4
    assert (tmp_path / "eval" / "lens_eval.png").is_file()
    assert main([*model, "lens", "import", str(tmp_path / "train" / "result")]) == 0  # lmscope's own folder too
    assert main([*model, "lens", "eval", *EVAL, *corpus, "--lens", str(tmp_path / "train" / "result"),
                 "--out", str(tmp_path / "eval2")]) == 0


def test_import_a_tuned_lens_folder(tiny_llama_dir, tmp_path, store_dir, capsys):
    import lmscope

    lm = lmscope.load(str(tiny_llama_dir))
    write_tuned_lens_folder(tmp_path / "tl", lm)
    assert main(["--model", str(tiny_llama_dir), "lens", "import", str(tmp_path / "tl")]) == 0
    assert "tuned lens" in capsys.readouterr().out
    assert main(["--model", str(tiny_llama_dir), "lens", PROMPT, "--readout", "tuned",
                 "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "lens.json").read_text())["readout"]["source"].startswith("tuned-lens")


@pytest.mark.parametrize("argv, fragment", [
    (["lens", PROMPT, "--readout", "tuned"], "no tuned lens"),
    (["lens", "train", "--position-fraction", "2"], "position-fraction"),
    (["lens", "train", "--position-fraction", "0"], "position-fraction"),
    (["lens", "train", "--momentum", "1"], "momentum"),
    (["lens", "train", "--lr-scale", "nan"], "lr-scale"),
    (["lens", "train", "--warmup-steps", "-2"], "warmup-steps"),
    (["lens", "train", "--tokens-per-step", "8", "--seq-len", "32"], "tokens-per-step"),
    (["lens", "eval", *EVAL], "no tuned lens"),
    (["lens", "eval", *EVAL, "--lens", "/nonexistent"], "holds no tuned lens"),
    (["lens", "import", "/nonexistent"], "not a folder"),
])
def test_bad_input(argv, fragment, tiny_llama_dir, tmp_path, store_dir, capsys):
    out = tmp_path / "out"
    one_line_error(capsys, main(["--model", str(tiny_llama_dir), *argv, "--out", str(out)]
                                if argv[1] != "import" else ["--model", str(tiny_llama_dir), *argv]), fragment)
    assert not out.exists()


def test_readout_choices_are_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        main(["lens", PROMPT, "--readout", "bogus"])
    assert "invalid choice" in capsys.readouterr().err
