"""Bad input to ``patch run``, ``patch ioi``, ``trace dataset`` and ``model list / info``: one line, exit 2.

Each case gives one line on stderr (the last one), no traceback and nothing left in ``--out``; the checks that need
no model run before it loads (``--model no-such-model-xyz`` would be the error otherwise).
"""

import json
import logging
import os

import pytest
import torch

import lmscope
from lmscope.cli import main
from lmscope.model import loading
from lmscope.model.loading import REGISTRY
from tests.helpers import tiny_model, tiny_tokenizer
from tests.methods.patching import fixtures

data = fixtures.data  # the IOI tests' fixture, used here by name
NO_MODEL = ["--model", "no-such-model-xyz"]  # loading it would fail: an error about anything else came first
PATCH = ["patch", "run", "--clean", "The capital of France is", "--corrupted", "The capital of Paris is"]


def one_line(capsys, code: int, *fragments: str) -> str:
    """The command failed with exit 2 and one line naming the problem, the last line on stderr."""
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    ours = [line for line in lines if line.startswith("lmscope ")]  # not the loaders' progress bars
    assert len(ours) == 1 and ours[0] == lines[-1] and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in ours[0], err
    return ours[0]


# ---- patch run --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, fragments", [
    ([*PATCH, "--answer", "Paris", "--wrong", "Paris"], ("--answer and --wrong are the same", "'Paris'")),
    (["patch", "run", "--clean", "The capital of France is", "--corrupted", "The capital of France is",
      "--answer", "Paris"], ("--clean and --corrupted are the same prompt",)),
    (["patch", "--clean", "The capital of France is", "--corrupted", "The capital of France is",
      "--answer", "Paris"], ("--clean and --corrupted are the same prompt",)),  # the old name
    ([*PATCH, "--answer", "  "], ("--answer is empty",)),
    ([*PATCH, "--answer", "Paris", "--wrong", ""], ("--wrong is empty",)),
])
def test_patch_pairs_that_compare_nothing_are_refused_before_the_model_loads(argv, fragments, tmp_path, capsys):
    out = tmp_path / "out"
    one_line(capsys, main([*NO_MODEL, *argv, "--out", str(out)]), *fragments)
    assert not out.exists()


def test_patch_answers_with_the_same_first_token(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["--model", str(tiny_llama_dir), *PATCH, "--answer", "Paris", "--wrong", "Paris France",
                 "--out", str(out)])
    one_line(capsys, code, "same first token", "'Paris'")
    assert not out.exists()


def test_patch_prompts_with_the_same_tokens(tiny_llama_dir, tmp_path, capsys):
    """Different text, same tokens (the word-level tokenizer drops extra spaces): nothing to patch."""
    out = tmp_path / "out"
    code = main(["--model", str(tiny_llama_dir), "patch", "run", "--clean", "The capital of France is",
                 "--corrupted", "The  capital of France is", "--answer", "Paris", "--out", str(out)])
    one_line(capsys, code, "same tokens")
    assert not out.exists()


def test_patch_multi_token_answer_warns(tiny_llama_dir, tmp_path, capsys, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        code = main(["--model", str(tiny_llama_dir), *PATCH, "--answer", "Paris France", "--wrong", "France",
                     "--kinds", "resid_pre", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("--answer 'Paris France' is 2 tokens; patching reads its first, 'Paris'" in w for w in warnings), \
        warnings
    assert (out / "patch.json").is_file()


# ---- patch ioi --------------------------------------------------------------------------------------------------
def test_ioi_sae_basis_without_an_sae(data, tmp_path, capsys):
    out = tmp_path / "out"
    code = main([*NO_MODEL, "patch", "ioi", "--data", str(data), "--bases", "sae", "--layer", "1",
                 "--out", str(out)])
    one_line(capsys, code, "--bases sae needs --sae")
    assert not out.exists()
    code = main([*NO_MODEL, "ioi-features", "--data", str(data), "--bases", "sae", "dims", "--layer", "1",
                 "--out", str(out)])
    one_line(capsys, code, "--bases sae needs --sae")
    assert not out.exists()


def test_ioi_resume_reads_the_screening_from_the_run_folder(data, tmp_path, capsys, monkeypatch):
    from lmscope.methods.patching import ioi as ioi_module

    model = tmp_path / "tiny-seed1"  # a model that answers two of the pairs
    tiny_model("llama", seed=1).save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    out = tmp_path / "ioi"
    argv = ["--model", str(model), "patch", "ioi", "--data", str(data), "--layer", "1", "--bases", "dims",
            "--n-prompts", "2", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    first = json.loads((out / "ioi.json").read_text())

    def no_screening(*args, **kwargs):
        raise AssertionError("the pairs were screened again")

    monkeypatch.setattr(ioi_module, "answers", no_screening)
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads((out / "ioi.json").read_text()) == first


# ---- trace dataset ----------------------------------------------------------------------------------------------
def test_trace_dataset_with_no_predicted_fact(tiny_llama_dir, tmp_path, capsys):
    lm = lmscope.load(str(tiny_llama_dir))
    facts = [{"known_id": i, "subject": s, "attribute": "w90", "template": "{} is in", "prompt": p}
             for i, (s, p) in enumerate([("France", "The capital of France is"), ("Paris", "Paris is in the"),
                                         ("Tower", "The Tower is located in the city of")])]
    for f in facts:  # the fixture's assumption: the random model never answers w90
        assert lm.to_str_tokens([int(lm(lm.tokenize(f["prompt"])["input_ids"])[0, -1].argmax())])[0] != "w90"
    (tmp_path / "facts.json").write_text(json.dumps(facts))
    out = tmp_path / "out"
    code = main(["--model", str(tiny_llama_dir), "trace", "dataset", "--data", str(tmp_path / "facts.json"),
                 "--samples", "2", "--out", str(out)])
    one_line(capsys, code, "predicts none of the 3 facts", "--all-facts")
    assert not out.exists()  # no records, no run.json, no summary with "ate": NaN


# ---- model list --verify, model info ----------------------------------------------------------------------------
@pytest.fixture
def fake_bundle(tmp_path, monkeypatch):
    """A registry entry whose GGUF reading is replaced by a tiny model (as in tests/families/test_loading.py)."""
    monkeypatch.setenv("LMSCOPE_CACHE", str(tmp_path / "cache"))
    calls = []
    monkeypatch.setattr(loading, "read_gguf", lambda gguf: calls.append(gguf) or (tiny_model("llama"),
                                                                                  tiny_tokenizer()))
    monkeypatch.setattr(loading.BundledModel, "gguf_path", lambda self: tmp_path / "fake.gguf")
    entry = loading.BundledModel("tiny-test", "a tiny test model", "none/none", (), "fake.gguf", "")
    monkeypatch.setitem(REGISTRY, "tiny-test", entry)
    return entry, calls


def test_model_list_verify_rebuilds_a_same_size_corruption_with_the_old_mtime(fake_bundle, capsys):
    entry, calls = fake_bundle
    lmscope.load("tiny-test")
    weights = entry.converted_dir() / "model.safetensors"
    before = weights.stat()
    data = bytearray(weights.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))  # touch -r: the old mtime restored
    assert main(["model", "list"]) == 0 and len(calls) == 1  # size and mtime are trusted: not noticed
    capsys.readouterr()
    assert main(["model", "list", "--verify"]) == 0
    out = capsys.readouterr().out
    assert len(calls) == 2, out
    assert "tiny-test" in out and "rebuilt" in out and "sha256" in out
    ids = torch.tensor([[4, 5, 6, 7, 8]])
    assert torch.equal(lmscope.load("tiny-test")(ids), tiny_model("llama")(ids).logits)
    assert main(["models", "--verify"]) == 0 and len(calls) == 2  # the rebuilt conversion verifies
    assert "verified" in capsys.readouterr().out


@pytest.mark.parametrize("keep", [("config.json",), ("config.json", "model.safetensors")])
def test_model_folder_without_weights_or_tokenizer(keep, tiny_llama_dir, tmp_path, capsys):
    folder = tmp_path / "partial"
    folder.mkdir()
    for name in keep:
        (folder / name).write_bytes((tiny_llama_dir / name).read_bytes())
    one_line(capsys, main(["--model", str(folder), "model", "info"]), str(folder),
             "no weights" if len(keep) == 1 else "tokenizer")
    out = tmp_path / "out"
    one_line(capsys, main(["--model", str(folder), "lens", "The capital", "--out", str(out)]), str(folder))
    assert not out.exists()
