"""Neuron attribution (SPEC §5) on tiny models: scores against brute force and finite differences, causal checks,
sensitivity, editing with a bit-identical undo, results that save and reload."""

import math

import pytest
import torch

from lmscope.errors import ConfigError, EditError, InputError
from lmscope.io import load_result
from lmscope.methods.neurons import (
    AblationConfig,
    NeuronConfig,
    NeuronEdit,
    NeuronEditConfig,
    ablate_neurons,
    apply_neuron_edit,
    find_neurons,
    neuron_edit,
    score_batch,
    sensitivity,
)
from lmscope.model.hooks import add
from lmscope.model.sites import Site
from lmscope.model.weights import linear_weight
from tests.helpers import tiny_lm

PROMPTS = ["The capital of France is", "Eiffel Tower is located in the"]


def test_contribution_equals_brute_force_per_neuron(family):
    """s[l, i] = O_i (W_U W_out)[t, i], checked by sending each neuron alone through the real W_out module."""
    lm = tiny_lm(family, sharp=True)
    inputs = lm.tokenize(PROMPTS[0])
    target = torch.tensor([lm.tokenizer.convert_tokens_to_ids("Paris")])
    layers = list(range(lm.n_layers))
    scored = score_batch(lm, inputs, target, layers, method="contribution")
    _, cache = lm.run_with_cache(inputs, [Site(layer, "mlp_key") for layer in layers])
    u = lm.W_U[target[0]].detach()
    for layer in layers:
        module = lm.layout.part(layer, "mlp_out_proj")
        o = cache[Site(layer, "mlp_key")][0, -1]  # (d_mlp,)
        with torch.no_grad():
            bias = module(torch.zeros(1, lm.d_mlp))[0]
            brute = torch.stack([(module((torch.eye(lm.d_mlp)[i] * o[i])[None])[0] - bias) @ u
                                 for i in range(lm.d_mlp)])
        torch.testing.assert_close(scored.contribution[0, layer], brute, rtol=1e-4, atol=1e-6)


def test_gradient_times_activation_matches_finite_differences():
    """d logit / d key by the scoring pass equals a central finite difference through the whole model."""
    lm = tiny_lm("llama", sharp=True)
    lm.model.to(torch.float64)
    inputs = lm.tokenize(PROMPTS[0])
    target = torch.tensor([lm.tokenizer.convert_tokens_to_ids("Paris")])
    scored = score_batch(lm, inputs, target, [0, 1, 2], method="gradxact")
    eps = 1e-3  # Llama's RMSNorm computes in float32 even in a float64 model: a small eps would be all rounding
    for layer, neuron in [(0, 3), (1, 17), (2, 40)]:
        site = Site(layer, "mlp_key")
        bump = torch.zeros(lm.d_mlp, dtype=torch.float64)
        bump[neuron] = eps
        with torch.no_grad(), lm.hooks(add(site, bump, positions=[-1])):
            up = lm(inputs)[0, -1, target[0]]
        with torch.no_grad(), lm.hooks(add(site, -bump, positions=[-1])):
            down = lm(inputs)[0, -1, target[0]]
        act = float(scored.keys[0, layer, -1, neuron])
        assert float(scored.gradxact[0, layer, neuron]) == pytest.approx(act * float(up - down) / (2 * eps),
                                                                         rel=2e-3, abs=1e-9)


def test_gradient_times_activation_on_a_hand_built_mlp():
    """In the last layer a key reaches the logit only through W_out, the final norm and W_U: autograd through those
    modules alone (no lmscope hooks) gives the same gradient x activation."""
    lm = tiny_lm("gpt2", sharp=True)
    inputs = lm.tokenize(PROMPTS[0])
    target = torch.tensor([lm.tokenizer.convert_tokens_to_ids("Paris")])
    scored = score_batch(lm, inputs, target, [2], method="gradxact")
    _, cache = lm.run_with_cache(inputs, [Site(2, "mlp_key"), Site(2, "resid_post")])
    key = cache[Site(2, "mlp_key")][0, -1].clone().requires_grad_(True)
    rest = cache[Site(2, "resid_post")][0, -1] - lm.layout.part(2, "mlp_out_proj")(
        cache[Site(2, "mlp_key")][0, -1][None])[0]
    resid = rest + lm.layout.part(2, "mlp_out_proj")(key[None])[0]
    logit = lm.unembed(resid)[target[0]]
    (grad,) = torch.autograd.grad(logit, key)
    torch.testing.assert_close(scored.gradxact[0, 0], (key * grad).detach(), rtol=1e-4, atol=1e-6)


def test_find_neurons_ranks_and_agrees():
    lm = tiny_lm("llama", sharp=True)
    res = find_neurons(lm, PROMPTS, ["Paris", None], NeuronConfig(top_k=5))
    assert res.contribution.shape == (2, lm.n_layers, lm.d_mlp) == res.gradxact.shape
    top = res.top[0]
    assert [n["rank_contribution"] for n in top] == [1, 2, 3, 4, 5]
    values = [n["contribution"] for n in top]
    assert values == sorted(values, reverse=True)
    assert values[0] == pytest.approx(float(res.contribution[0].max()))
    assert -1 <= res.agreement[0] <= 1 and 0 <= res.overlap[0] <= 1
    n = len(res.tokens[0])
    assert res.top_acts.shape[:2] == (2, 5) and not res.top_acts[0, :, :n].isnan().any()
    default = res.target_ids[1]  # the model's own next token
    assert default == int(lm(lm.tokenize(PROMPTS[1]))[0, -1].argmax())


def test_one_method_and_layers_and_multi_token_target(tmp_path):
    lm = tiny_lm("gpt2")
    res = find_neurons(lm, PROMPTS[0], "Paris France", NeuronConfig(method="contribution", layers=(1, 2), top_k=3))
    assert res.gradxact.numel() == 0 and math.isnan(res.agreement[0])
    assert res.layers == [1, 2] and res.targets == ["Paris"] and "2 tokens" in res.notes[0]
    with pytest.raises(KeyError):
        res.scores("gradxact")
    back = load_result(res.save(tmp_path / "r"))
    assert back.top == res.top and torch.equal(back.contribution, res.contribution)


def test_bad_input_is_one_clear_error():
    lm = tiny_lm("llama")
    with pytest.raises(ConfigError, match="larger than"):
        find_neurons(lm, PROMPTS[0], config=NeuronConfig(top_k=999))  # more neurons than the tiny model has
    with pytest.raises(ConfigError, match="top-k must be in 1..1,000"):
        NeuronConfig(top_k=10_000)
    with pytest.raises(InputError):
        find_neurons(lm, [" "])
    with pytest.raises(InputError, match="targets for"):
        find_neurons(lm, PROMPTS, ["Paris"])
    with pytest.raises(ConfigError):
        NeuronConfig(method="magic")


@pytest.mark.parametrize("mode", ["zero", "mean", "noise"])
def test_ablation_against_random_sets(mode, tmp_path):
    lm = tiny_lm("llama", sharp=True)
    found = find_neurons(lm, PROMPTS, ["Paris", None], NeuronConfig(top_k=4))
    cfg = AblationConfig(mode=mode, random_sets=3, new_tokens=2, mean_tokens=64, corpus="wiki")
    res = ablate_neurons(lm, found, cfg)
    assert res.random_after.shape == (2, 3) and res.random_generated.shape == (2, 3)
    assert res.prob_before == pytest.approx(found.target_prob, rel=1e-5)
    if mode == "zero":  # the found set moves P(target) more than any random set
        assert abs(res.prob_before[0] - res.prob_after[0]) > 0
    back = load_result(res.save(tmp_path / "a"))
    assert back.neurons == res.neurons and torch.equal(back.random_after, res.random_after)


def test_zero_ablation_of_the_top_contributor_lowers_its_direct_logit():
    """Zeroing neurons in the last layer removes exactly their contribution from the target's logit (no norm)."""
    lm = tiny_lm("gpt_neox")
    inputs = lm.tokenize(PROMPTS[0])
    found = find_neurons(lm, PROMPTS[0], "Paris", NeuronConfig(method="contribution", layers=(2,), top_k=3))
    _, cache = lm.run_with_cache(inputs, [Site(2, "mlp_key")])
    key = cache[Site(2, "mlp_key")][0, -1]
    w = linear_weight(lm.layout.part(2, "mlp_out_proj")).detach()
    idx = [n["neuron"] for n in found.top[0]]
    u = lm.W_U[found.target_ids[0]].detach()
    removed = sum(float(key[i] * (u @ w[:, i])) for i in idx)
    assert removed == pytest.approx(sum(n["contribution"] for n in found.top[0]), rel=1e-4)


def test_sensitivity_and_specificity():
    lm = tiny_lm("llama")
    neurons = [[0, 1], [2, 5]]
    res = sensitivity(lm, neurons, PROMPTS, ["Paris is the capital"], quantile=0.5)
    assert res.same.shape == (2, 2) and res.other.shape == (1, 2)
    assert 0 <= res.sensitivity <= 1 and 0 <= res.specificity <= 1
    _, cache = lm.run_with_cache(PROMPTS[0], [Site(2, "mlp_key")])
    assert float(res.same[0, 1]) == pytest.approx(float(cache[Site(2, "mlp_key")][0, -1, 5]))
    with pytest.raises(InputError):
        sensitivity(lm, [], PROMPTS, [])


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_neuron_edit_moves_the_contribution_and_undoes_bit_for_bit(family, tmp_path):
    lm = tiny_lm(family, sharp=True)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    logits = lm(PROMPTS[0])
    handle = neuron_edit(lm, 2, 7, "Paris", "France", prompt=PROMPTS[0], config=NeuronEditConfig(margin=0.05))
    (b0, b1), (c0, c1) = handle.edit.contribution_before, handle.edit.contribution_after
    assert c1 > c0 and c1 - c0 > b1 - b0 and len(handle.edit.losses) > 1
    changed = [k for k, v in lm.model.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) == 1 and "2" in changed[0]
    handle.edit.save(tmp_path / "edit")
    handle.undo()
    assert all(torch.equal(v, before[k]) for k, v in lm.model.state_dict().items())
    assert torch.equal(lm(PROMPTS[0]), logits)
    edit = NeuronEdit.load(tmp_path / "edit")
    with apply_neuron_edit(lm, edit), torch.no_grad():
        w = linear_weight(lm.layout.part(2, "mlp_out_proj"))[:, 7]
        o = edit.activation
        assert float(o * w @ lm.W_U[edit.v1_id]) > float(o * w @ lm.W_U[edit.v0_id])
    assert all(torch.equal(v, before[k]) for k, v in lm.model.state_dict().items())


def test_neuron_edit_errors():
    lm = tiny_lm("llama")
    with pytest.raises(InputError, match="out of range"):
        neuron_edit(lm, 0, 10_000, "Paris", "France")
    with pytest.raises(InputError, match="same token"):
        neuron_edit(lm, 0, 1, "Paris", "Paris")
    with pytest.raises(InputError, match="tokens"):
        neuron_edit(lm, 0, 1, "Paris France", "Tower")
    handle = neuron_edit(lm, 0, 1, "Paris", "France", config=NeuronEditConfig(steps=5))
    other = tiny_lm("llama", seed=1)
    with pytest.raises(EditError, match="other weights"):
        apply_neuron_edit(other, handle.edit)
    handle.undo()


def test_the_figure_of_all_zero_scores_warns_nothing():
    import warnings

    from lmscope.viz.neurons import neurons_figure

    res = find_neurons(tiny_lm(), PROMPTS[0], "Paris", NeuronConfig(top_k=3))
    for row in res.top[0]:
        row["gradxact"] = 0.0  # as last-layer neurons at image patches: no path to the word
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        neurons_figure(res)
