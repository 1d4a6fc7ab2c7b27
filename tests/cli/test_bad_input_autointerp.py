"""Bad input to ``lmscope autointerp``: one line on stderr, exit code 2, no traceback, no NaN, nothing bad cached.

The endpoint is the autointerp tests' stub server (tests/methods/autointerp/fixtures.py), scripted to answer
with JSON of the wrong shape or an HTTP client error.
"""

import json

import pytest

from lmscope.cli import main
from tests.methods.autointerp import fixtures

corpus, stub = fixtures.corpus, fixtures.stub  # the autointerp tests' fixtures, used here by name


def one_line_error(capsys, code: int, *fragments: str) -> str:
    """The one ``lmscope ...: error`` line of a refused command (exit 2, no traceback), holding ``fragments``."""
    assert code == 2
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("lmscope ")]  # not the loaders' progress bars
    assert len(ours) == 1 and ours[0] == err.strip().splitlines()[-1] and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in ours[0], err
    return ours[0]


def argv(model, corpus, out, *extra) -> list[str]:
    """A small http-backend autointerp run of two PCA directions at layer 1."""
    return ["--model", str(model), "autointerp", "--layer", "1", "--kinds", "pca", "--n-units", "2",
            "--corpus", corpus, "--split", "all", "--tokens", "512", "--seq-len", "16", "--fit-tokens", "256",
            "--out", str(out), *extra]


def http(stub) -> list[str]:
    return ["--backend", "http", "--base-url", stub.url, "--api-model", "stub", "--retries", "3"]


def cached(out) -> list:
    """The answers in the run's http-cache/ (none when it does not exist)."""
    folder = out / "http-cache"
    return [json.loads(p.read_text())["content"] for p in folder.iterdir()] if folder.is_dir() else []


@pytest.mark.parametrize("body, shown", [
    ({"choices": []}, '{"choices": []}'),
    ([], "returned []"),
    ({"choices": [{"message": {"role": "assistant", "content": None}}]}, '"content": null'),
    ({"choices": [{"message": {"role": "assistant"}}]}, "no choices[0].message.content"),
])
def test_an_answer_of_the_wrong_shape_is_one_line_never_cached_and_a_rerun_works(
        body, shown, tiny_llama_dir, corpus, stub, tmp_path, capsys):
    out = tmp_path / "ai"
    stub.script = [{"body": body}]
    line = one_line_error(capsys, main(argv(tiny_llama_dir, corpus, out, *http(stub))), shown, "not a chat")
    assert "tries" not in line and len(stub.requests) == 1  # not retried: the server answered, wrongly
    assert cached(out) == []
    stub.answer = lambda messages: "the word Paris" if "summarize" in messages[0]["content"] else "No"
    assert main(argv(tiny_llama_dir, corpus, out, *http(stub))) == 0  # the same command, a healthy server
    assert cached(out) and all(isinstance(c, str) for c in cached(out))


def test_a_bad_answer_left_in_the_cache_is_asked_again_not_replayed(tiny_llama_dir, corpus, stub, tmp_path, capsys):
    out = tmp_path / "ai"
    stub.answer = lambda messages: "the word Paris" if "summarize" in messages[0]["content"] else "No"
    assert main(argv(tiny_llama_dir, corpus, out, *http(stub))) == 0
    sent = len(stub.requests)
    for path in (out / "http-cache").iterdir():  # answers cached by an older lmscope, or a corrupt file
        path.write_text(json.dumps({"request": {}, "content": None}))
    (out / "records.jsonl").unlink()
    assert main(argv(tiny_llama_dir, corpus, out, *http(stub))) == 0
    assert len(stub.requests) == 2 * sent and all(isinstance(c, str) for c in cached(out))


def test_an_http_400_is_reported_after_one_request(tiny_llama_dir, corpus, stub, tmp_path, capsys):
    stub.script = [{"status": 400, "body": {"error": {"message": "max_tokens must be at most 4096"}}}]
    line = one_line_error(capsys, main(argv(tiny_llama_dir, corpus, tmp_path / "ai", *http(stub))),
                          "HTTP 400", "max_tokens must be at most 4096")
    assert "tries" not in line and len(stub.requests) == 1
    assert cached(tmp_path / "ai") == []


@pytest.mark.parametrize("status", [429, 500, 503])
def test_throttling_and_server_errors_are_retried(status, tiny_llama_dir, corpus, stub, tmp_path, capsys):
    stub.script = [{"status": status, "body": "try later"}] * 2
    stub.answer = lambda messages: "the word Paris" if "summarize" in messages[0]["content"] else "No"
    assert main(argv(tiny_llama_dir, corpus, tmp_path / "ai", *http(stub), "--no-detection")) == 0
    assert "nan" not in capsys.readouterr().out.lower()


def test_a_missing_prompts_folder_is_refused_before_the_model_loads(tmp_path, corpus, capsys):
    code = main(argv("no-such-model-xyz", corpus, tmp_path / "ai", "--prompts", str(tmp_path / "nowhere")))
    one_line_error(capsys, code, "prompts folder", "nowhere", "does not exist")
    assert not (tmp_path / "ai").exists()


@pytest.mark.parametrize("name, text, fragments", [
    ("simulator_chat.txt", "Explain {explanation} for {tokens} up to {max_value}. {oops}",
     ("simulator_chat.txt", "{oops}", "explanation, max_value, tokens")),
    ("explainer.txt", "Activations: {examples", ("explainer.txt",)),
    ("detector.txt", "Does it fire on {text}?", ("detector.txt", "{explanation}")),
])
def test_a_prompt_template_with_an_unknown_placeholder_is_refused_before_the_model_loads(
        name, text, fragments, tmp_path, corpus, capsys):
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / name).write_text(text)
    code = main(argv("no-such-model-xyz", corpus, tmp_path / "ai", "--prompts", str(tmp_path / "prompts")))
    one_line_error(capsys, code, *fragments)
    assert not (tmp_path / "ai").exists()


def test_no_scored_unit_prints_a_dash_not_nan(tiny_llama_dir, corpus, stub, tmp_path, capsys):
    stub.answer = lambda messages: "the word Paris" if "summarize" in messages[0]["content"] else "maybe"
    assert main(argv(tiny_llama_dir, corpus, tmp_path / "ai", *http(stub))) == 0
    printed = capsys.readouterr().out
    assert "pca simulation -" in printed and "nan" not in printed.lower()
    summary = (tmp_path / "ai" / "autointerp.json").read_text()
    assert "NaN" not in summary and json.loads(summary)["kinds"]["pca"]["mean_score"] is None


@pytest.mark.parametrize("extra, fragment", [
    (["--timeout", "nan"], "timeout must be"),
    (["--timeout", "1e300"], "timeout must be in"),
    (["--retries", "100"], "retries must be in 0..10"),
    (["--concurrency", "0"], "concurrency must be"),
    (["--units", "-1"], "units must be in"),
    (["--kinds", "pca", "pca"], "each once"),
    (["--units", "3"], "need the kind sae or neurons"),
    (["--tokens", "8"], "at least one excerpt of seq-len (16)"),
    (["--n-units", "0"], "n-units must be"),
    (["--unit-seed", "-1"], "unit-seed must be in"),
    (["--base-url", "localhost:8000/v1"], "base-url must be an http:// or https:// address"),
    (["--judge", "maybe"], "judge must be one of quote, yes-no"),
    (["--quiet-below", "nan"], "quiet-below must be in 0..1"),
    (["--quiet-below", "2"], "quiet-below must be in 0..1"),
    (["--explainer-dtype", "int8"], "explainer-dtype must be one of"),
    (["--mark", "nan"], "mark must be in 0..1"),
    (["--window", "-1"], "window must be a number >= 0"),
    (["--no-simulation", "--no-detection", "--no-fuzzing"], "every scorer is off"),
])
def test_values_that_make_no_sense_are_refused_before_the_model_loads(extra, fragment, tmp_path, corpus, capsys):
    base = argv("no-such-model-xyz", corpus, tmp_path / "ai", "--backend", "http", "--base-url", "http://h:1/v1",
                "--api-model", "m")
    one_line_error(capsys, main([*base, *extra]), fragment)
    assert not (tmp_path / "ai").exists()
