"""Activation and attribution patching on tiny random models: exact cells, batching, heads, errors, save / draw."""

import pytest
import torch

import lmscope
from lmscope import Site, apply
from lmscope.methods.patching import PatchConfig, activation_patching, attribution_patching, logit_diff
from lmscope.viz.patching import patching_figure
from tests.helpers import tiny_lm

CLEAN = torch.tensor([[5, 17, 3, 44, 9, 60, 7, 21]])  # (1, pos)
CORRUPT = CLEAN.clone()
CORRUPT[0, 2] = 40  # one token differs
METRIC = logit_diff(9, 60)


@pytest.fixture
def lm():
    return tiny_lm("llama", sharp=True)


def test_exact_cells_batching_and_heads(family):
    lm = tiny_lm(family, sharp=True)
    cfg = PatchConfig(kinds=("resid_pre", "resid_post", "heads"), batch_size=7)
    result = activation_patching(lm, CLEAN, CORRUPT, METRIC, cfg)
    pre, post = result.scores["resid_pre"], result.scores["resid_post"]
    assert pre.shape == (lm.n_layers, 8) and result.scores["heads"].shape == (lm.n_layers, lm.n_heads)
    torch.testing.assert_close(pre[0, 2], torch.tensor(1.0), atol=1e-4, rtol=0)  # the only differing embedding
    assert torch.all(pre[:, :2].abs() < 1e-4)  # before the corruption clean == corrupted: nothing to patch
    torch.testing.assert_close(post[-1, -1], torch.tensor(1.0), atol=1e-4, rtol=0)  # the last state is the output
    one = activation_patching(lm, CLEAN, CORRUPT, METRIC, PatchConfig(kinds=("heads",), layers=(1,), batch_size=1))
    torch.testing.assert_close(one.scores["heads"][1], result.scores["heads"][1], atol=1e-5, rtol=1e-4)
    assert torch.isnan(one.scores["heads"][0]).all()  # layers left out stay NaN


def test_one_head_by_hand(lm):
    result = activation_patching(lm, CLEAN, CORRUPT, METRIC, PatchConfig(kinds=("heads",), layers=(2,)))
    site, d, h = Site(2, "attn_heads"), lm.d_head, 1
    _, clean = lm.run_with_cache(CLEAN, [site])

    def patch(x):
        x = x.clone()
        x[..., h * d:(h + 1) * d] = clean[site][..., h * d:(h + 1) * d]
        return x

    with torch.no_grad(), lm.hooks(apply(site, patch)):
        by_hand = float(METRIC(lm(CORRUPT))[0])
    torch.testing.assert_close(result.scores["heads"][2, h], result.normalise(torch.tensor(by_hand)), atol=1e-5,
                               rtol=0)


def test_attribution_is_the_first_order_term():
    lm = tiny_lm("llama", sharp=True)
    lm.model.double()
    site, pos = Site(1, "resid_pre"), 4

    def metric(logits):  # in float64, so that a finite difference is exact enough
        return logits[:, -1, 9] - logits[:, -1, 60]

    result = attribution_patching(lm, CLEAN, CORRUPT, metric, PatchConfig(kinds=("resid_pre",)))
    _, clean = lm.run_with_cache(CLEAN, [site])
    _, corr = lm.run_with_cache(CORRUPT, [site])
    delta = clean[site][0, pos] - corr[site][0, pos]
    eps = 1e-2  # (the tiny model is not exactly float64 throughout: smaller steps drown in rounding)

    def nudge(x):
        x = x.clone()
        x[0, pos] += eps * delta
        return x

    with torch.no_grad():
        base = float(metric(lm(CORRUPT))[0])
        with lm.hooks(apply(site, nudge)):
            moved = float(metric(lm(CORRUPT))[0])
    estimate = float(result.scores["resid_pre"][1, pos]) * (result.clean_metric - result.corrupted_metric)
    assert abs((moved - base) / eps - estimate) < 0.01 * abs(estimate)
    exact = activation_patching(lm, CLEAN, CORRUPT, metric, PatchConfig(kinds=("resid_pre",)))
    a, e = result.scores["resid_pre"].flatten(), exact.scores["resid_pre"].flatten()
    assert torch.corrcoef(torch.stack([a, e]))[0, 1] > 0.3  # positively related even on a sharpened random model


def test_errors_save_and_figure(lm, tmp_path):
    with pytest.raises(lmscope.InputError, match="same number of tokens"):
        activation_patching(lm, CLEAN, CORRUPT[:, :-1], METRIC)
    with pytest.raises(lmscope.InputError, match="outside the prompt"):
        activation_patching(lm, CLEAN, CORRUPT, METRIC, PatchConfig(positions=(8,)))
    with pytest.raises(lmscope.SiteError, match="layer"):
        activation_patching(lm, CLEAN, CORRUPT, METRIC, PatchConfig(layers=(9,)))
    with pytest.raises(lmscope.ConfigError, match="patch kinds"):
        PatchConfig(kinds=("mlp",))
    result = activation_patching(lm, CLEAN, CORRUPT, METRIC, PatchConfig(positions=(2, -1)))
    back = lmscope.load_result(result.save(tmp_path / "r"))
    assert back.summary() == result.summary()
    assert all(torch.equal(back.scores[k].nan_to_num(), result.scores[k].nan_to_num()) for k in result.scores)
    assert torch.isnan(result.scores["mlp_out"][:, 0]).all() and not torch.isnan(result.scores["mlp_out"][:, 7]).any()
    patching_figure(result)


def test_pairs_and_answers_that_compare_nothing_are_refused(lm, caplog):
    from lmscope.methods.patching import PatchPrompts, answer_metric, attribution_patching

    with pytest.raises(lmscope.InputError, match="--clean and --corrupted are the same prompt"):
        PatchPrompts("The capital of France is", "The capital of France is", "Paris")
    with pytest.raises(lmscope.InputError, match="--answer and --wrong are the same"):
        PatchPrompts("The capital of France is", "The capital of Paris is", "Paris", "Paris")
    with pytest.raises(lmscope.InputError, match="--wrong is empty"):
        PatchPrompts("The capital of France is", "The capital of Paris is", "Paris", " ")
    PatchPrompts("The capital of France is", "The capital of Paris is", "Paris", "France")  # fine
    with pytest.raises(lmscope.InputError, match="same tokens"):
        activation_patching(lm, CLEAN, CLEAN.clone(), METRIC)
    with pytest.raises(lmscope.InputError, match="same first token, 'Paris'"):
        answer_metric(lm, "Paris", "Paris France")
    with caplog.at_level("WARNING"):
        metric = answer_metric(lm, "Paris France", "France")
    assert "--answer 'Paris France' is 2 tokens; patching reads its first, 'Paris'" in caplog.text
    ids = lm.tokenizer(["Paris", "France"], add_special_tokens=False)["input_ids"]
    logits = torch.randn(2, 3, lm.tokenizer.vocab_size)
    assert torch.equal(metric(logits), logit_diff(ids[0][0], ids[1][0])(logits))
    for method in (activation_patching, attribution_patching):  # a metric the corruption cannot move
        with pytest.raises(lmscope.InputError, match="on both the clean and the corrupted prompt"):
            method(lm, CLEAN, CORRUPT, lambda logits: 0 * logits.sum((1, 2)))
