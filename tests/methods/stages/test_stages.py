"""Stages of inference on tiny random models: lesions equal hand-made forwards and the naive sweep, surgery is
always restored, neuron statistics find a planted spike, results round-trip (the CLI: tests/cli/test_stages_cli.py)."""

import pytest
import torch

import lmscope
from lmscope import Site
from lmscope.methods import stages as st
from lmscope.methods.stages import analysis, metrics, neurons
from lmscope.model.surgery import delete_blocks, swap_blocks
from tests.helpers import tiny_model, tiny_tokenizer
from tests.methods.stages.fixtures import PROMPT

CFG = st.StagesConfig(tokens=128, seq_len=16, batch_size=4, corpus="wiki")


def tiny(family="llama"):
    return lmscope.load((tiny_model(family), tiny_tokenizer()))


def test_deleting_a_block_equals_a_forward_that_skips_it(family):
    lm = tiny(family)
    ids = lm.tokenize(PROMPT)["input_ids"]
    block = lm.layout.blocks[1]
    stash = {}

    def keep_input(_m, args, kwargs):
        stash["x"] = args[0] if args else kwargs["hidden_states"]

    def output_is_input(_m, _args, out):
        return (stash["x"], *out[1:]) if isinstance(out, tuple) else stash["x"]

    handles = [block.register_forward_pre_hook(keep_input, with_kwargs=True),
               block.register_forward_hook(output_is_input)]
    try:
        with torch.no_grad():
            by_hand = lm(ids)
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad(), delete_blocks(lm, 1):
        deleted = lm(ids)
    torch.testing.assert_close(deleted, by_hand, atol=1e-6, rtol=0)


def test_lesions_are_restored_after_exceptions():
    lm = tiny()
    ids = lm.tokenize(PROMPT)["input_ids"]
    with torch.no_grad():
        before = lm(ids)
    for lesion in (lambda: delete_blocks(lm, 1), lambda: swap_blocks(lm, 0)):
        with pytest.raises(RuntimeError, match="boom"):
            with lesion():
                raise RuntimeError("boom")
        with torch.no_grad():
            assert torch.equal(lm(ids), before)


def _naive(lm, ids):
    """Every lesion as a full forward pass: (mode -> (layers, 3) sums of KL, correct, entropy change)."""
    with torch.no_grad():
        ref = metrics.Reference.of(metrics.next_logits(lm, ids))
        targets = ids[:, 1:]
        out = {}
        for mode, lesion, n in (("delete", delete_blocks, lm.n_layers), ("swap", swap_blocks, lm.n_layers - 1)):
            rows = []
            for layer in range(n):
                with lesion(lm, layer):
                    sums = metrics.compare(ref, metrics.next_logits(lm, ids), targets)
                    rows.append(torch.stack([v.double() for v in sums]))
            out[mode] = torch.stack(rows)
    return out


@pytest.mark.parametrize("family_name", ["llama", "gpt2", "gemma3_text"])
def test_cached_prefix_sweep_equals_the_naive_sweep(family_name):
    lm = tiny(family_name)
    ids = torch.randint(3, 97, (3, 12))
    sums = metrics.Sums()
    analysis.measure_batch(lm, ids, CFG, sums)
    naive = _naive(lm, ids)
    for mode in st.MODES:
        torch.testing.assert_close(sums.sums[mode], naive[mode], atol=1e-4, rtol=1e-5)


def test_neuron_statistics_find_a_planted_spike():
    lm = tiny()
    with torch.no_grad():
        w_u, w_out = lm.W_U, lm.W_out(1)  # (vocab, d), (d, d_mlp)
        w_u[:, 0], w_u[42, 0] = 0.0, 10.0  # residual direction 0 is token 42's alone
        w_out[0] = 0.0
        w_out[0, 0], w_out[0, 1] = 1.0, -1.0  # neuron 0 writes it (prediction), neuron 1 against it (suppression)
    skew, kurt = st.neuron_vocab_moments(lm, 1)
    # one spike among V = 97 logits: kurtosis V - 2 + 1 / (V - 1), skew +- (V - 2) / sqrt(V - 1)
    assert float(kurt[0]) == pytest.approx(95 + 1 / 96, rel=1e-3)
    assert float(skew[0]) == pytest.approx(95 / 96 ** 0.5, rel=1e-3)
    assert float(kurt[1]) == pytest.approx(float(kurt[0]), rel=1e-4)
    assert float(skew[1]) == pytest.approx(-float(skew[0]), rel=1e-4)
    assert kurt[2:].max() < 8  # random directions: near-Gaussian logits (kurtosis 3)
    x = (lm.W_U @ lm.W_out(1)[:, 0]).double()
    z = (x - x.mean()) / x.std(unbiased=False)
    assert float(skew[0]) == pytest.approx(float((z ** 3).mean().detach()), rel=1e-4)
    cfg = st.StagesConfig(top_neurons=2)
    top = neurons.top_neurons(lm, torch.stack([skew] * 3), torch.stack([kurt] * 3), cfg)
    assert {(n["class"], n["neuron"]) for n in top} >= {("prediction", 0), ("suppression", 1)}
    assert lm.to_str_tokens([42])[0] == next(n for n in top if n["neuron"] == 0)["tokens"][0]


def test_stages_result_round_trip_and_shapes(tmp_path):
    lm = tiny("gpt2")
    result = st.stages(lm, CFG)
    assert result.tokens == 8 * 15 and result.locality.shape == (lm.n_layers, 4)
    assert result.lesion["delete_kl"].shape == (lm.n_layers,) and result.lesion["swap_kl"].shape == (lm.n_layers - 1,)
    assert float(result.lens_kl[-1]) == pytest.approx(0.0, abs=1e-5)  # the last layer's lens is the output
    assert float(result.locality.max()) <= 1.0 + 1e-6
    back = st.StagesResult.load(result.save(tmp_path / "stages"))
    assert back.config == result.config and back.top_neurons == result.top_neurons
    assert all(torch.equal(back.lesion[k], v) for k, v in result.lesion.items())
    assert torch.equal(back.kurtosis, result.kurtosis)


def test_site_capture_sees_the_lesioned_stream():
    lm = tiny()
    ids = lm.tokenize(PROMPT)["input_ids"]
    with delete_blocks(lm, 1):
        _, cache = lm.run_with_cache(ids, [Site(0, "resid_post"), Site(1, "resid_post")])
    torch.testing.assert_close(cache[Site(1, "resid_post")], cache[Site(0, "resid_post")], atol=0, rtol=0)


def test_lesion_metrics_equal_their_definitions():
    """KL(P_ref || P), top-1 hits and H(P) - H(P_ref), summed over positions, against torch's own functions."""
    ref_logits, logits = torch.randn(2, 40, 50), torch.randn(2, 40, 50) * 2
    targets = torch.randint(0, 50, (2, 40))
    kl, correct, d_entropy = metrics.compare(metrics.Reference.of(ref_logits), logits, targets, chunk=16)
    logp_ref, logp = ref_logits.log_softmax(-1), logits.log_softmax(-1)
    entropy = lambda lp: -(lp.exp() * lp).sum(-1)  # noqa: E731
    torch.testing.assert_close(kl.float(), torch.nn.functional.kl_div(logp, logp_ref, log_target=True,
                                                                      reduction="sum"), rtol=1e-4, atol=1e-4)
    assert int(correct) == int((logits.argmax(-1) == targets).sum())
    torch.testing.assert_close(d_entropy.float(), (entropy(logp) - entropy(logp_ref)).sum(), rtol=1e-4, atol=1e-4)


def test_the_lens_curves_read_through_the_stores_tuned_lens(store_dir, tmp_path):
    from dataclasses import replace

    from lmscope.model.readout import TunedLens, lens_path
    from tests.helpers import write_corpus

    lm = tiny("llama")
    cfg = replace(CFG, corpus=write_corpus(tmp_path / "c.txt", extra_words=60, lengths=(5, 40), docs=50),
                  split="all")  # the private store holds no packaged corpus
    logit = st.stages(lm, cfg)
    assert logit.readout["kind"] == "logit" and logit.summary()["lens_readout"] == "logit lens"
    lens = TunedLens.identity(lm)
    lens.save(lens_path(lm))
    same = st.stages(lm, cfg)  # auto: the store's lens, here the identity (= the logit lens)
    assert same.readout["kind"] == "tuned"
    torch.testing.assert_close(same.lens_kl, logit.lens_kl)
    lens.bias = 0.5 * torch.randn(lens.bias.shape, generator=torch.Generator().manual_seed(0))
    lens.save(lens_path(lm))
    moved = st.stages(lm, cfg)
    assert not torch.allclose(moved.lens_kl[:-1], logit.lens_kl[:-1])
    torch.testing.assert_close(moved.lens_kl[-1], logit.lens_kl[-1])  # the output row has no translator
    forced = st.stages(lm, replace(cfg, readout="logit"))
    torch.testing.assert_close(forced.lens_kl, logit.lens_kl)
