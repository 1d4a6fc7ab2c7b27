"""Bad input on the command line: one line on stderr, exit code 2, nothing written, nothing cached."""

import json
import math

import pytest

from lmscope.cli import main


def one_line_error(capsys, code: int, *fragments: str) -> str:
    assert code == 2
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("lmscope ")]  # not the loaders' progress bars
    assert len(ours) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in ours[0], err
    return ours[0]


def test_out_that_is_a_file_fails_before_the_model_loads(tmp_path, capsys):
    (tmp_path / "file").write_text("keep me")
    code = main(["--model", "no-such-model-xyz", "lens", "x", "--out", str(tmp_path / "file")])
    one_line_error(capsys, code, "is a file, not a folder")  # not "unknown model": --out is checked first
    assert (tmp_path / "file").read_text() == "keep me"


def test_unwritable_out(capsys):
    one_line_error(capsys, main(["--model", "no-such-model-xyz", "lens", "x", "--out", "/proc/x"]),
                   "cannot write to the output folder /proc/x")


@pytest.mark.parametrize("command", ["trace-dataset", "eval-edits"])
def test_empty_data_file(command, tmp_path, tiny_llama_dir, capsys):
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "list.json").write_text("[]")
    for data in ("empty.json", "list.json"):
        code = main(["--model", str(tiny_llama_dir), command, "--data", str(tmp_path / data),
                     "--out", str(tmp_path / "o")])
        one_line_error(capsys, code, "holds no records")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, message", [
    (["trace", "The capital of France is", "--subject", "France", "--noise", "nan"], "noise must be a number >= 0"),
    (["trace", "The capital of France is", "--subject", "France", "--samples", "0"], "samples must be"),
    (["stages", "--tokens", "0"], "tokens must be a number >= 128"),
    (["stages", "--seq-len", "0"], "seq-len must be a number >= 2"),
    (["stats", "--layer", "1", "--samples", "0"], "samples must be a number >= 1"),
    (["edit", "--prompt", "{} is in", "--subject", "France", "--target", "x", "--v-steps", "0"], "v-steps"),
    (["lesion", "The capital", "--layer", "2", "--mode", "swap"], "cannot swap block 2: it is the last block"),
    (["lesion", "The capital", "--layer", "3"], "layer 3 is out of range"),
    (["lens", " ".join(["the"] * 70)], "more than the 64 positions"),
    (["trace-dataset", "--data", "x.json", "--limit", "0"], "limit must be >= 1"),
])
def test_values_that_make_no_sense(argv, message, tiny_llama_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LMSCOPE_CACHE", str(tmp_path / "store"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.json").write_text(json.dumps([{"subject": "a", "attribute": "b", "template": "{}",
                                                  "prompt": "a"}]))
    one_line_error(capsys, main(["--model", str(tiny_llama_dir), *argv]), message)
    assert not (tmp_path / "store" / "stats").exists()  # nothing was cached
    assert not (tmp_path / "out").exists()  # and no output folder was left behind


def test_required_layer(tiny_llama_dir, capsys):
    with pytest.raises(SystemExit):
        main(["--model", str(tiny_llama_dir), "lesion", "The capital"])
    assert "--layer" in capsys.readouterr().err


def test_edit_with_no_sampled_prefixes(tiny_llama_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LMSCOPE_CACHE", str(tmp_path / "store"))
    corpus = tmp_path / "texts.txt"
    corpus.write_text("\n\n".join(f"the capital of France is Paris w{i}" for i in range(10)))
    code = main(["--model", str(tiny_llama_dir), "edit", "--prompt", "the capital of {}", "--subject", "France",
                 "--target", "Tower", "--layer", "1", "--contexts-per-length", "0", "--v-steps", "2",
                 "--stats-corpus", str(corpus), "--stats-samples", "10", "--max-new-tokens", "2",
                 "--out", str(tmp_path / "edit")])
    assert code == 0, capsys.readouterr().err
    edit = json.loads((tmp_path / "edit" / "edit.json").read_text())
    assert edit["layer"] == 1 and edit["layer_source"] == "given" and math.isfinite(edit["after"]["p_target"])
