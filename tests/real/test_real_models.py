"""The real bundled models (slow): parity with every site hooked, attention patterns, and pinned lens numbers.

Numbers were measured on CPU, float32, torch 2.13.0, transformers 5.x; tolerances cover BLAS differences.
"""

import pytest
import torch

import lmscope
from lmscope import KINDS, EditRequest, RomeConfig, Site, TraceConfig, causal_trace, rome_edit
from lmscope.methods.rome.evaluate import target_probs
from lmscope.model.generate import greedy

pytestmark = pytest.mark.slow
PROMPT = "The capital of France is"
MODELS = ["smollm2-135m", "gemma3-270m"]


@pytest.fixture(scope="module", params=MODELS)
def lm(request):
    return lmscope.load(request.param)


def test_parity_with_every_site_captured(lm):
    ids = lm.tokenize("The Eiffel Tower is located in the city of")["input_ids"]
    with torch.no_grad():
        bare = lm.model(input_ids=ids, use_cache=False).logits
    sites = [Site(layer, kind) for layer in range(lm.n_layers) for kind in KINDS if kind != "embed"]
    logits, cache = lm.run_with_cache(ids, sites + [Site(0, "embed")])
    assert torch.equal(logits, bare)
    assert len(cache) == len(sites) + 1
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in lm.model.modules())
    assert torch.equal(lm(ids), bare)


def test_residual_decomposition_and_patterns(lm):
    ids = lm.tokenize(PROMPT)["input_ids"]
    layer = lm.n_layers // 2
    kinds = ("resid_pre", "attn_out", "mlp_out", "resid_post", "attn_pattern")
    _, cache = lm.run_with_cache(ids, [Site(layer, k) for k in kinds])
    c = {k: cache[Site(layer, k)] for k in kinds}
    torch.testing.assert_close(c["resid_pre"] + c["attn_out"] + c["mlp_out"], c["resid_post"], atol=1e-4, rtol=1e-4)
    pattern = c["attn_pattern"]  # (batch, head, query, key)
    assert pattern.shape == (1, lm.model.config.num_attention_heads, ids.shape[1], ids.shape[1])
    torch.testing.assert_close(pattern.sum(-1), torch.ones(pattern.shape[:-1]))
    assert torch.all(pattern.triu(1) == 0)


EXPECTED = {  # model: (final top-3, their probabilities, KL of the embeddings row, top token of the second-last row)
    "smollm2-135m": ([" Paris", " the", " London"], [0.7725, 0.0645, 0.0125], 106.843, " capital"),
    "gemma3-270m": ([" the", " a", " Paris"], [0.1913, 0.1110, 0.0840], 419.638, " Paris"),
}


def test_logit_lens_pinned(lm):
    result = lmscope.logit_lens(lm, PROMPT)
    top3, probs, kl0, second_last = EXPECTED[lm.name]
    assert result.top_tokens[-1][-1][:3] == top3
    torch.testing.assert_close(result.top_probs[-1, -1, :3], torch.tensor(probs), atol=2e-3, rtol=0)
    assert float(result.kl[0, -1]) == pytest.approx(kl0, rel=1e-3)
    assert result.top_token(-2) == second_last
    assert float(result.kl[-1].abs().max()) < 1e-4


def test_causal_trace_eiffel_smollm2():
    """ROME's picture on smollm2-135m: an early site at the subject's key token, a late site at the last token."""
    lm = lmscope.load("smollm2-135m")
    result = causal_trace(lm, "The Eiffel Tower is located in the city of", "The Eiffel Tower",
                          config=TraceConfig(kinds=("hidden",)))
    assert result.target == " Paris" and result.subject_range == (0, 4)
    assert result.noise == pytest.approx(0.3472, rel=1e-3)
    assert result.clean_prob == pytest.approx(0.7015, abs=2e-3)
    assert result.corrupted_prob == pytest.approx(0.0149, abs=1e-3)
    hidden = result.scores["hidden"]
    # restoring the last layer's last position gives the clean run back, up to the rounding of a batched forward
    # against a single one (1.05e-5 on an AVX2-only CPU; a restore that missed would read ~0.015)
    assert float(hidden[-1, -1]) == pytest.approx(result.clean_prob, abs=1e-4)
    assert divmod(int(hidden.argmax()), lm.n_layers) == (9, 23)
    assert float(hidden[2, 0]) > 0.2 > float(hidden[3, 0])  # 'iffel' carries the subject, ' Tower' does not


def test_rome_eiffel_to_rome_smollm2():
    """The issue's edit on smollm2-135m at layer 4 (its MLP AIE peak at the last subject token over known_1000)."""
    lm = lmscope.load("smollm2-135m")
    request = EditRequest("{} is located in the city of", "The Eiffel Tower", " Rome")
    paraphrase, other = "The Eiffel Tower can be found in", "The Colosseum is located in the city of"
    ids = lm.tokenize(other)["input_ids"]
    with torch.no_grad():
        before = lm(ids)
    p_para, p_other = target_probs(lm, [paraphrase, other], " Rome")
    assert target_probs(lm, [request.text], " Paris")[0] == pytest.approx(0.7015, abs=2e-3)
    with rome_edit(lm, request, RomeConfig(layer=4, stats_samples=1000)) as handle:
        assert greedy(lm, request.text, 2).startswith(" Rome")
        assert target_probs(lm, [request.text], " Rome")[0] > 0.95
        after_para, after_other = target_probs(lm, [paraphrase, other], " Rome")
        assert after_para > 10 * p_para  # measured 0.0031 -> 0.285
        assert after_other == pytest.approx(p_other, abs=0.05) and greedy(lm, other, 2).startswith(" Rome")
        assert handle.edit.losses[-1]["p_target"] > 0.95
    with torch.no_grad():
        assert torch.equal(lm(ids), before)
