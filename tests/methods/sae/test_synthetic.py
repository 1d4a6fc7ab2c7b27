"""The ground-truth benchmark: the generator's statistics are what its config says, and recovery scores a dictionary
that is the truth 1 and a random one near chance."""

import pytest
import torch

import lmscope
from lmscope.methods.sae import SaeConfig, SynthConfig, SyntheticActivations, TrainConfig, build_sae, fit_saes, recovery

SMALL = SynthConfig(d=32, n_features=96, target_l0=4.0, n_parents=4, children=3, group_size=4, noise_std=0.01)


def test_firing_follows_the_config():
    synth = SyntheticActivations(SMALL)
    x, a = synth.sample(20_000, torch.Generator().manual_seed(0))
    fired = (a > 0).float()
    assert x.shape == (20_000, 32) and a.shape == (20_000, 96)
    assert fired.sum(-1).mean().item() == pytest.approx(4.0, rel=0.05)  # target L0
    torch.testing.assert_close(fired.mean(0), synth.p, atol=0.01, rtol=0.1)  # each feature's marginal rate
    kids = (synth.parent >= 0).nonzero().flatten()
    assert len(kids) == 12 and bool((fired[:, kids] <= fired[:, synth.parent[kids]]).all())  # only with the parent
    for parent in synth.parent[kids].unique().tolist():
        assert int(fired[:, kids[synth.parent[kids] == parent]].sum(-1).max()) <= 1  # one child at a time
    grouped = (synth.group == 0).nonzero().flatten()[:2]
    corr = torch.corrcoef(fired[:, grouped].T)[0, 1]
    assert corr > 0.1  # features of one group fire together
    again = SyntheticActivations(SMALL).sample(20_000, torch.Generator().manual_seed(0))[0]
    assert torch.equal(x, again)  # seeded: a table is rerun exactly


def test_recovery_of_the_truth_and_of_a_random_dictionary():
    synth = SyntheticActivations(SMALL)
    exact = build_sae(SaeConfig("relu", d_in=32, width=96)).eval()
    with torch.no_grad():
        exact.W_dec.copy_(synth.dictionary)
        exact.W_enc.copy_(synth.dictionary.T)
    truth = recovery(exact, synth, n=4096)
    assert truth["mcc"] == pytest.approx(1.0) and truth["recovered"] == 1.0
    chance = recovery(build_sae(SaeConfig("topk", d_in=32, width=96, k=4)), synth, n=4096)
    assert chance["mcc"] < 0.75 and chance["recovered"] < 0.1
    with pytest.raises(lmscope.ConfigError, match="child-rate"):
        SynthConfig(child_rate=1.5)


def test_a_topk_dictionary_learns_the_truth_from_synthetic_activations():
    synth = SyntheticActivations(SMALL)
    before = recovery(build_sae(SaeConfig("topk", d_in=32, width=96, k=4)), synth, n=4096)
    (sae,) = fit_saes([SaeConfig("topk", d_in=32, width=96, k=4)], synth.batches(300, 512),
                      TrainConfig(batch_tokens=512, lr=3e-3, warmup_steps=10))
    after = recovery(sae, synth, n=4096)
    assert after["mcc"] > before["mcc"] + 0.15 and after["recovered"] > 0.3 and after["fve"] > 0.6
