"""Bad input to the SAE commands (``sae harvest|train|eval|features``): one line on stderr, exit code 2, nothing
written in ``--out``; legitimate input (a forced site or model, a folder that names no site) still runs."""

import json

import pytest
import torch

from lmscope.cli import main
from lmscope.io import load_tensors, read_json, save_tensors, write_json
from lmscope.methods.sae import SaeConfig, build_sae, save_sae
from tests.methods.sae import fixtures

# the SAE tests' fixtures, used here by name (private_store is autouse: this module's tests get a private store too)
corpus, private_store = fixtures.corpus, fixtures.private_store

SMALL = ["--split", "all", "--seq-len", "16", "--batch-size", "4"]


def one_line_error(capsys, code: int, *fragments: str) -> str:
    """The one error line of a refused command (exit 2, no traceback), holding every fragment."""
    err = capsys.readouterr().err
    assert code == 2, err
    ours = [line for line in err.splitlines() if line.startswith("lmscope ")]  # not the loaders' progress bars
    assert len(ours) == 1 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == ours[0], err
    for fragment in fragments:
        assert fragment in ours[0], err
    return ours[0]


def sae_folder(path, arch="topk", d_in=32, width=64, k=4, site="resid_post.1", model="tiny-llama", **tensors):
    """An SAE folder in lmscope's layout; ``tensors`` replace saved tensors (e.g. W_dec=...)."""
    folder = save_sae(build_sae(SaeConfig(arch, d_in=d_in, width=width, k=k)), path, site=site, model=model)
    if tensors:
        saved = load_tensors(folder / "sae.safetensors")
        save_tensors(folder / "sae.safetensors", {**saved, **tensors})
    return folder


@pytest.fixture
def run(tiny_llama_dir, corpus, tmp_path, capsys):
    """Run an SAE command on the tiny model and small settings; returns the exit code."""
    def go(*argv: str, corpus_path: str | None = None) -> int:
        text = ["--corpus", corpus_path or corpus, *SMALL]
        return main(["--model", str(tiny_llama_dir), *argv, *text, "--out", str(tmp_path / "out")])
    return go


def nothing_written(tmp_path) -> None:
    assert not (tmp_path / "out").exists(), sorted(p.name for p in (tmp_path / "out").iterdir())


# ---- 1. the artifact check: on load and before use --------------------------------------------------------------
def _tensor(name: str, value):
    w = build_sae(SaeConfig("topk", d_in=32, width=64, k=4)).weights()[name]
    return value(w)


def _one_nan(w):
    w = w.clone()
    w[3, 5] = float("nan")
    return w


@pytest.mark.parametrize("command", ["sae-eval", "sae-features"])
@pytest.mark.parametrize("make, fragments", [
    (lambda p: sae_folder(p, d_in=24, width=48), ("d_in 24", "resid_post.1", "32 wide")),
    (lambda p: sae_folder(p, W_dec=_tensor("W_dec", lambda w: torch.full_like(w, float("nan")))),
     ("W_dec", "2048 of 2048", "not finite")),
    (lambda p: sae_folder(p, W_enc=_tensor("W_enc", _one_nan)), ("W_enc", "1 of 2048", "not finite")),
    (lambda p: sae_folder(p, W_enc=_tensor("W_enc", lambda w: (w * 100).to(torch.int32))),
     ("W_enc", "torch.int32", "floating point")),
    (lambda p: sae_folder(p, model="gemma3-270m"), ("gemma3-270m", "tiny-llama", "--force")),
    (lambda p: sae_folder(p, site="attn_pattern.1"), ("attn_pattern", "resid_post")),
], ids=["width", "nan-W_dec", "one-nan-W_enc", "int32", "model", "pattern-site"])
def test_a_bad_sae_folder_is_refused(command, make, fragments, run, tmp_path, capsys):
    folder = make(tmp_path / "sae")
    one_line_error(capsys, run(command, str(folder), "--tokens", "64"), *fragments)
    nothing_written(tmp_path)


def _cfg(folder, edit):
    cfg = read_json(folder / "cfg.json")
    write_json(folder / "cfg.json", edit(cfg))
    return folder


@pytest.mark.parametrize("edit, fragments", [
    (lambda c: {**c, "config": {**c["config"], "oops": 1}}, ("unknown key", "oops")),
    (lambda c: {k: v for k, v in c.items() if k != "config"}, ("cfg.json", "no 'config'")),
    (lambda c: [c], ("cfg.json", "a list, not an object")),
    (lambda c: {**c, "config": {**c["config"], "k": 5000}}, ("k 5000", "d_sae 64")),
    (lambda c: {**c, "config": {**c["config"], "k": "many"}}, ("k", "'many'")),
    (lambda c: {**c, "format": 99}, ("format 99", "newer lmscope")),
], ids=["unknown-key", "no-config", "list", "k-over-d_sae", "k-text", "format"])
def test_a_bad_cfg_json_is_one_line(edit, fragments, run, tmp_path, capsys):
    folder = _cfg(sae_folder(tmp_path / "sae"), edit)
    one_line_error(capsys, run("sae-eval", str(folder), "--tokens", "64"), *fragments)
    nothing_written(tmp_path)


@pytest.mark.parametrize("drop, fragments", [("d_in", ("d_in", "SAELens")), ("d_sae", ("d_sae", "SAELens"))])
def test_a_saelens_folder_without_a_width(drop, fragments, run, tmp_path, capsys):
    folder = save_sae(build_sae(SaeConfig("topk", d_in=32, width=64, k=4)), tmp_path / "lens", site="resid_post.1",
                      format="saelens")
    _cfg(folder, lambda c: {k: v for k, v in c.items() if k != drop})
    one_line_error(capsys, run("sae-eval", str(folder), "--tokens", "64"), *fragments)
    _cfg(folder, lambda c: [c])
    one_line_error(capsys, run("sae-eval", str(folder), "--tokens", "64"), "a list, not an object")
    nothing_written(tmp_path)


def test_site_and_model_of_the_folder_win_unless_forced(run, tmp_path, capsys):
    folder = sae_folder(tmp_path / "sae")  # trained at resid_post.1
    one_line_error(capsys, run("sae-eval", str(folder), "--site", "resid_post.2", "--tokens", "64"),
                   "resid_post.1", "resid_post.2", "--force")
    nothing_written(tmp_path)
    assert run("sae-eval", str(folder), "--site", "resid_post.2", "--force", "--tokens", "64") == 0
    assert json.loads((tmp_path / "out" / "eval.json").read_text())["site"] == "resid_post.2"
    other = sae_folder(tmp_path / "other", model="gemma3-270m")
    assert run("sae-eval", str(other), "--force", "--tokens", "64") == 0
    nameless = sae_folder(tmp_path / "nameless", site="")  # --site fills in where the folder names none
    one_line_error(capsys, run("sae-eval", str(nameless), "--tokens", "64"), "names no site", "--site")
    assert run("sae-eval", str(nameless), "--site", "resid_post.0", "--tokens", "64") == 0
    assert json.loads((tmp_path / "out" / "eval.json").read_text())["site"] == "resid_post.0"


# ---- 2. SaeConfig's relations in sae train ------------------------------------------------------------------------
TRAIN = ["sae-train", "--sites", "resid_post.1", "--tokens", "256", "--batch-tokens", "64", "--buffer-rows", "256"]


@pytest.mark.parametrize("extra, fragments", [
    (["--architecture", "topk", "--k", "5000", "--ratio", "2"], ("k 5000", "d_sae 64")),
    (["--architecture", "topk", "--k", "100", "--width", "64"], ("k 100", "d_sae 64")),
    (["--architecture", "topk", "--sweep-k", "4", "65", "--ratio", "2"], ("k 65", "d_sae 64")),
    (["--d-in", "512"], ("d-in 512", "32", "resid_post.1")),
    (["--shard-tokens", "1000"], ("shard-tokens", "--buffer-rows")),
    (["--tokens", "10"], ("tokens 10", "batch-tokens 64")),
    (["--architecture", "jumprelu", "--jumprelu-loss", "quadratic"], ("quadratic", "--target-l0")),
    (["--architecture", "jumprelu", "--jumprelu-loss", "magic"], ("jumprelu-loss", "'magic'")),
    (["--architecture", "jumprelu", "--jumprelu-bandwidth", "0"], ("jumprelu-bandwidth", "> 0")),
    (["--architecture", "jumprelu", "--l0-coefficient", "nan"], ("l0-coefficient", "nan")),
    (["--architecture", "jumprelu", "--sweep-l0", "1", "-1"], ("l0-coefficient", "-1")),
    (["--architecture", "matryoshka", "--matryoshka-widths", "16", "8"], ("matryoshka-widths", "increasing")),
    (["--architecture", "matryoshka", "--ratio", "2", "--matryoshka-widths", "8", "1000"],
     ("matryoshka-widths end at 1000", "64 latents")),
    (["--transcoder"], ("transcoder", "tied")),  # the default architecture is the tied one
    (["--architecture", "topk", "--skip"], ("skip", "--transcoder")),
    (["--architecture", "topk", "--transcoder"], ("resid_post.1", "not an mlp_in site")),
    (["--architecture", "topk", "--transcoder", "--sites", "mlp_in.1", "--d-out", "99"], ("d-out 99", "mlp_out.1")),
    (["--buffer-rows", "1000000000"], ("buffer of 1,000,000,000 rows", "--buffer-rows")),
    (["--architecture", "matryoshka", "--matryoshka-widths", "8", "x"], ("matryoshka-widths", "whole numbers", "'x'")),
], ids=["k-ratio", "k-width", "sweep-k", "d-in", "shard-tokens", "tokens", "quadratic-no-target", "jumprelu-loss",
        "bandwidth-0", "l0-nan", "sweep-l0-negative", "widths-order", "widths-past-d_sae", "tied-transcoder",
        "skip-no-transcoder", "transcoder-site", "d-out", "buffer-memory", "widths-text"])
def test_sae_train_relations(extra, fragments, run, tmp_path, capsys):
    one_line_error(capsys, run(*TRAIN, *extra), *fragments)
    nothing_written(tmp_path)


# ---- 3. the corpus and sites of harvest and train -----------------------------------------------------------------
def _bad_corpora(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "short.txt").write_text("The capital")  # fewer tokens than one row
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "notes.jsonl").write_text("the capital\nof France\n")
    return [(tmp_path / "empty.txt", "no token rows"), (tmp_path / "short.txt", "no token rows"),
            (tmp_path / "binary.txt", "not UTF-8 text"), (tmp_path / "notes.jsonl", "not JSON or JSON lines")]


@pytest.mark.parametrize("command", [
    ["sae-harvest", "--sites", "resid_post.1", "--tokens", "256"],
    TRAIN,
    ["sae-features", "SAE", "--tokens", "64"],
    ["sae-eval", "SAE", "--tokens", "64"],
])
def test_empty_or_binary_corpus(command, run, tmp_path, capsys):
    sae = str(sae_folder(tmp_path / "sae"))
    for path, message in _bad_corpora(tmp_path):
        argv = [sae if a == "SAE" else a for a in command]
        one_line_error(capsys, run(*argv, corpus_path=str(path)), str(path), message)
        nothing_written(tmp_path)


def test_a_corpus_shorter_than_asked_for_is_harvested_with_a_warning(run, tmp_path, capsys, caplog):
    assert run("sae-harvest", "--sites", "resid_post.1", "--tokens", "1000000", "--buffer-rows", "4096") == 0
    assert "ran out after 2 of 245 buffers" in caplog.text and "activations at resid_post.1" in capsys.readouterr().out


def test_a_d_in_that_is_the_site_width_is_used(run, tmp_path, capsys):
    assert run(*TRAIN, "--architecture", "topk", "--k", "4", "--ratio", "2", "--d-in", "32") == 0, capsys.readouterr()
    saved = read_json(next((tmp_path / "out").glob("resid_post.1-*")) / "cfg.json")
    assert saved["config"]["d_in"] == 32 and saved["config"]["k"] == 4


@pytest.mark.parametrize("command", [["sae-harvest", "--tokens", "256"], TRAIN[:1] + TRAIN[3:]])
def test_sites_that_cannot_be_harvested(command, run, tmp_path, capsys):
    one_line_error(capsys, run(command[0], "--sites", "attn_pattern.1", *command[1:]),
                   "attn_pattern.1", "cannot be harvested", "resid_post")
    nothing_written(tmp_path)


def test_a_cache_with_no_shards_and_no_text(run, tmp_path, capsys, corpus):
    cache = tmp_path / "cache"
    assert run("sae-harvest", "--sites", "resid_post.1", "--tokens", "256", "--buffer-rows", "256") == 0
    (tmp_path / "out").rename(cache)
    for shard in cache.glob("shard-*"):
        shard.unlink()
    write_json(cache / "manifest.json", {**read_json(cache / "manifest.json"), "shards": {}})
    open(corpus, "w").close()  # the corpus is empty now: nothing to harvest the missing shards from
    one_line_error(capsys, run(*TRAIN, "--cache", str(cache)), "no token rows")
    nothing_written(tmp_path)


# ---- 4. feature ids ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("features, fragments", [
    (["-1"], ("features", "-1")), (["99999"], ("99999", "0..63")), (["3", "64"], ("64", "0..63")),
])
def test_feature_ids_out_of_range(features, fragments, run, tmp_path, capsys):
    folder = sae_folder(tmp_path / "sae")
    one_line_error(capsys, run("sae-features", str(folder), "--tokens", "64", "--features", *features), *fragments)
    nothing_written(tmp_path)


# ---- 5. no NaN in a written result --------------------------------------------------------------------------------
def test_a_non_finite_metric_is_an_error_naming_its_cause(run, tmp_path, capsys):
    huge = build_sae(SaeConfig("relu", d_in=32, width=64)).weights()
    folder = sae_folder(tmp_path / "sae", arch="relu", W_enc=huge["W_enc"].abs() * 1e30,
                        W_dec=huge["W_dec"].abs() * 1e30)  # finite weights, but the reconstruction overflows
    one_line_error(capsys, run("sae-eval", str(folder), "--tokens", "64"), "reconstruction", "not finite")
    nothing_written(tmp_path)


def test_evaluation_metrics_that_are_undefined_are_errors(tiny_llama_dir):
    """No tokens left, activations that do not vary, a site whose ablation changes nothing: errors, not NaN."""
    import lmscope
    from lmscope.methods.sae.evaluate import EvalConfig, _result, _Totals
    from lmscope.model.sites import Site

    lm, site = lmscope.load(str(tiny_llama_dir)), Site(1, "resid_post")
    sae = build_sae(SaeConfig("relu", d_in=32, width=64))
    totals = _Totals(32, 64)
    with pytest.raises(lmscope.DataError, match="no evaluation tokens"):
        _result(lm, sae, site, totals, EvalConfig())
    x = torch.ones(5, 32)
    totals.add(x, x, torch.zeros(5, 64))
    with pytest.raises(lmscope.InputError, match="do not vary"):
        _result(lm, sae, site, totals, EvalConfig())
    totals = _Totals(32, 64)
    totals.add(torch.randn(5, 32), torch.randn(5, 32), torch.zeros(5, 64))
    totals.ce, totals.ce_tokens = torch.tensor([2.0, 3.0, 2.0], dtype=torch.float64), 1
    with pytest.raises(lmscope.InputError, match="CE recovered is undefined"):
        _result(lm, sae, site, totals, EvalConfig())


# ---- sae export ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, argv, fragments", [
    (lambda p: p / "missing", [], ("does not exist",)),
    (lambda p: sae_folder(p / "sae", W_dec=_tensor("W_dec", _one_nan)), [], ("W_dec", "not finite")),
    (lambda p: (p / "sae.bin").write_bytes(bytes(range(256))) and p / "sae.bin", [], ("is a file",)),
    (lambda p: _cfg(sae_folder(p / "sae"), lambda c: [c]), [], ("a list, not an object",)),
    (lambda p: sae_folder(p / "sae", site=""), [], ("names no site", "--site")),
    (lambda p: sae_folder(p / "sae"), ["--site", "resid_post.-1x"], ("not a site",)),
], ids=["missing", "nan", "binary-file", "cfg-list", "no-site", "bad-site"])
def test_sae_export_bad_input(make, argv, fragments, tmp_path, capsys):
    folder = make(tmp_path)
    one_line_error(capsys, main(["sae-export", str(folder), *argv, "--out", str(tmp_path / "out")]), *fragments)
    nothing_written(tmp_path)
