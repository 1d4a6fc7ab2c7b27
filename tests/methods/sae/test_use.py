"""Using an SAE: splicing changes nothing when it should not, CE recovered is 1 for an exact SAE and 0 for a zero
one, feature interventions move the model (the command line: tests/cli/test_sae_cli.py)."""

import pytest
import torch

import lmscope
from lmscope import Site
from lmscope.methods.sae import EvalConfig, SaeConfig, build_sae, evaluate_sae, set_feature, splice
from lmscope.methods.sae.splice import feature_acts
from tests.methods.sae.fixtures import exact_sae

SITE = Site(1, "resid_post")
PROMPT = "The Eiffel Tower is located in the city of"


def zero_sae(d: int):
    sae = build_sae(SaeConfig("relu", d_in=d, width=4))
    with torch.no_grad():
        for p in sae.parameters():
            p.zero_()
    return sae.eval()


def test_splices_that_change_nothing_change_no_logit(lm):
    ids = lm.tokenize(PROMPT)["input_ids"]
    with torch.no_grad():
        bare = lm(ids)
        some = build_sae(SaeConfig("topk", d_in=lm.d_model, ratio=2, k=4)).eval()
        with lm.hooks(splice(some, SITE, keep_error=True)):
            assert torch.equal(lm(ids), bare)  # the error term puts back exactly what the SAE misses
        with lm.hooks(splice(exact_sae(lm.d_model), SITE)):
            assert torch.equal(lm(ids), bare)
        with lm.hooks(set_feature(some, SITE, 0, 5.0, mode="add")):
            assert not torch.equal(lm(ids), bare)
        _, cache = lm.run_with_cache(ids, [SITE])
        acts = feature_acts(some, cache[SITE])
        assert acts.shape == (1, ids.shape[1], some.d_sae) and ((acts > 0).sum(-1) <= 4).all()


def test_ce_recovered_of_exact_and_zero_saes(lm, corpus):
    cfg = EvalConfig(corpus=corpus, split="all", tokens=256, seq_len=16, batch_size=4)
    exact = evaluate_sae(lm, exact_sae(lm.d_model), SITE, cfg)
    assert exact.ce_recovered == 1.0 and exact.mse == 0.0 and exact.fve == 1.0 and exact.ce_sae == exact.ce_orig
    assert exact.l0 > 0 and exact.tokens > 200 and exact.density.shape == (2 * lm.d_model,)
    zero = evaluate_sae(lm, zero_sae(lm.d_model), SITE, cfg)
    assert zero.ce_recovered == 0.0 and zero.dead == 1.0 and zero.l0 == 0.0 and zero.fve < 0.01
    assert "mean(x)" in zero.summary()["fve_definition"]


def test_methods_run_through_an_sae(lm):
    """Any method runs through an SAE under lm.hooks: here the logit lens, with the SAE spliced at block 1."""
    sae = build_sae(SaeConfig("topk", d_in=lm.d_model, ratio=2, k=2)).eval()
    plain = lmscope.logit_lens(lm, PROMPT)
    with lm.hooks(splice(sae, SITE)):
        through = lmscope.logit_lens(lm, PROMPT)
    assert torch.equal(through.top_probs[:2], plain.top_probs[:2])  # embeddings and block 0 come before the splice
    assert not torch.equal(through.top_probs[2:], plain.top_probs[2:])  # from block 1 on: the reconstruction
    with lm.hooks(splice(exact_sae(lm.d_model), SITE)):
        assert torch.equal(lmscope.logit_lens(lm, PROMPT).top_probs, plain.top_probs)


def test_ce_recovered_of_exact_and_zero_transcoders(lm, corpus):
    """A transcoder whose prediction is the true MLP's output recovers the loss exactly (1); one that predicts 0
    recovers nothing (0): the evaluation splices its prediction into mlp_out from what it read at mlp_in."""
    cfg = EvalConfig(corpus=corpus, split="all", tokens=256, seq_len=16, batch_size=4)
    mlp = lm.layout.part(1, "mlp")
    exact = build_sae(SaeConfig("topk", d_in=lm.d_model, ratio=2, k=4, transcoder=True, skip=True)).eval()
    exact.output = mlp.forward  # the MLP itself (its hooks left out): what an exact transcoder would compute
    exact.target = Site(1, "mlp_out")
    result = evaluate_sae(lm, exact, Site(1, "mlp_in"), cfg)
    assert result.ce_recovered == 1.0 and result.fve == 1.0
    assert result.site == "mlp_out.1" and result.reads == "mlp_in.1"
    zero = build_sae(SaeConfig("relu", d_in=lm.d_model, width=4, transcoder=True)).eval()
    with torch.no_grad():
        for p in zero.parameters():
            p.zero_()
    zero.target = Site(1, "mlp_out")
    assert evaluate_sae(lm, zero, Site(1, "mlp_in"), cfg).ce_recovered == 0.0
    zero.target = None
    with pytest.raises(lmscope.SiteError, match="target site is not named"):
        evaluate_sae(lm, zero, Site(1, "mlp_in"), cfg)


def test_a_transcoders_features_are_read_but_not_patched_as_directions_at_its_input():
    sae = build_sae(SaeConfig("topk", d_in=8, width=16, k=2, transcoder=True)).eval()
    units = sae.units(Site(1, "mlp_in"))
    assert units.encode(torch.randn(3, 8)).shape == (3, 16) and units.directions is None  # patching refuses it
