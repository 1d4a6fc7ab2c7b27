"""The logit lens on tiny random models of every family, its result round trip, and its figures and report."""

import base64

import pytest
import torch

import lmscope
from lmscope.methods.lens import LensConfig, LogitLensResult, logit_lens
from lmscope.viz import lens_report, plot_lens_curves, plot_lens_grid
from tests.helpers import tiny_model, tiny_tokenizer

PROMPT = "The capital of France is"


@pytest.fixture
def lens_result(family):
    lm = lmscope.load((tiny_model(family), tiny_tokenizer()))
    return lm, logit_lens(lm, PROMPT, LensConfig(top_k=5))


def test_last_row_is_the_model_output(lens_result):
    lm, result = lens_result
    ids = lm.tokenize(PROMPT)["input_ids"]
    probs = torch.softmax(lm(ids)[0].float(), -1)  # (pos, vocab)
    top = probs.topk(5, -1)
    assert torch.equal(result.top_ids[-1], top.indices)
    torch.testing.assert_close(result.top_probs[-1], top.values)
    torch.testing.assert_close(result.kl[-1], torch.zeros(ids.shape[1]), atol=1e-5, rtol=0)
    assert result.top_ids.shape == (lm.n_layers + 1, ids.shape[1], 5)
    assert result.layer_labels == ["embed", *map(str, range(lm.n_layers))]
    assert result.tokens == lm.to_str_tokens(ids[0])


def test_rows_read_the_residual_streams(lens_result):
    lm, result = lens_result
    ids = lm.tokenize(PROMPT)["input_ids"]
    _, cache = lm.run_with_cache(ids, [lmscope.Site(0, "resid_post"), lmscope.Site(0, "resid_pre")])
    for row, site in ((1, lmscope.Site(0, "resid_post")), (0, lmscope.Site(0, "resid_pre"))):
        logp = torch.log_softmax(lm.unembed(cache[site][0]).float(), -1)
        assert torch.equal(result.top_ids[row], logp.topk(5, -1).indices)
        entropy = -(logp.exp() * logp).sum(-1)
        torch.testing.assert_close(result.entropy[row], entropy)
    assert (result.kl >= 0).all() and (result.entropy >= 0).all()


def test_save_load_round_trip(tmp_path):
    lm = lmscope.load((tiny_model("llama"), tiny_tokenizer()))
    result = logit_lens(lm, PROMPT, LensConfig(top_k=3))
    result.save(tmp_path / "lens")
    back = LogitLensResult.load(tmp_path / "lens")
    assert back.config == LensConfig(top_k=3) and back.tokens == result.tokens
    assert back.top_tokens == result.top_tokens and back.layer_labels == result.layer_labels
    for name in ("top_ids", "top_probs", "kl", "entropy"):
        assert torch.equal(getattr(back, name), getattr(result, name))
    assert not list((tmp_path / "lens").glob("*.pkl")) and (tmp_path / "lens" / "cfg.json").is_file()


def test_bad_config_and_empty_prompt():
    with pytest.raises(lmscope.ConfigError, match="top-k"):
        LensConfig(top_k=0)
    lm = lmscope.load((tiny_model("llama"), tiny_tokenizer()))
    with pytest.raises(lmscope.InputError, match="empty prompt"):
        logit_lens(lm, "")


def test_figures_and_self_contained_report(tmp_path):
    lm = lmscope.load((tiny_model("gpt2"), tiny_tokenizer()))
    result = logit_lens(lm, PROMPT)
    for path in (plot_lens_grid(result, tmp_path / "g.png"), plot_lens_curves(result, tmp_path / "c.png")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = lens_report(result).write(tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "src=\"http" not in page and "<script src" not in page
    png = base64.b64decode(page.split("data:image/png;base64,")[1].split('"')[0])
    assert png[:4] == b"\x89PNG"
    assert f"{result.top_token()!r}" in page.replace("&#x27;", "'")


def test_chunked_positions_give_the_same_lens():
    lm = lmscope.load((tiny_model("llama"), tiny_tokenizer()))
    prompt = "The capital of France is Paris the city of the Eiffel Tower"
    whole = logit_lens(lm, prompt, LensConfig(top_k=3, chunk=512))
    chunked = logit_lens(lm, prompt, LensConfig(top_k=3, chunk=2))
    assert chunked.top_tokens == whole.top_tokens and torch.equal(chunked.top_ids, whole.top_ids)
    for name in ("top_probs", "kl", "entropy"):
        torch.testing.assert_close(getattr(chunked, name), getattr(whole, name), atol=1e-6, rtol=1e-5)
