"""Attribution graphs on tiny random models: the frozen model is the clean run and linear, exact transcoders make
the direct effects add up to the logit, every edge equals a finite difference of the linearised model, pruning and
the scores follow circuit-tracer's definitions, results round-trip and export circuit-tracer's JSON."""

from __future__ import annotations

import json

import pytest
import torch

import lmscope
from lmscope.errors import InputError
from lmscope.io import load_result
from lmscope.methods.graphs import (
    AttributionGraph,
    GraphConfig,
    attribution_graph,
    exact_mlp,
    from_coder,
    prune,
    scores,
)
from lmscope.methods.graphs.attribute import logit_targets
from lmscope.methods.graphs.replacement import final_norm_site, replacement, setup
from lmscope.model.hooks import add
from lmscope.model.linearize import Linearization
from lmscope.model.sites import Site
from tests.helpers import FAMILY_NAMES, tiny_model, tiny_tokenizer

PROMPT = "The capital of France is"
NO_BIAS = ["gemma", "gemma3_text", "llama", "mistral", "qwen2", "qwen3"]  # the frozen model is linear, not affine


def tiny(family: str):
    return lmscope.load((tiny_model(family), tiny_tokenizer()))


def exact(lm):
    return {layer: exact_mlp(lm, layer) for layer in range(lm.n_layers)}


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_the_replacement_model_is_the_clean_run_and_affine(family):
    lm = tiny(family)
    ids = lm.tokenize(PROMPT)["input_ids"]
    with torch.no_grad():
        clean = lm.model(input_ids=ids).logits
        with Linearization.capture(lm, ids).frozen(lm):  # frozen patterns and norms alone: still the clean run
            torch.testing.assert_close(lm.model(input_ids=ids).logits, clean, atol=1e-5, rtol=1e-5)
    state = setup(lm, ids, exact(lm), zero_first=False)
    emb = Site(0, "embed")
    delta = 0.3 * torch.randn(1, ids.shape[1], lm.d_model, generator=torch.Generator().manual_seed(0))
    outs = []
    with torch.no_grad():
        for scale in (0.0, 1.0, 2.0):  # + the MLP outputs held: affine in the embeddings
            with replacement(lm, state, add(emb, scale * delta)):
                outs.append(lm.model(input_ids=ids, use_cache=False).logits)
    torch.testing.assert_close(outs[0], clean, atol=1e-5, rtol=1e-5)
    cap = getattr(lm.config, "final_logit_softcapping", None)
    if not cap:  # a soft-cap on the logits is the one non-linearity left (the graph reads the logits before it)
        torch.testing.assert_close(outs[2] - outs[0], 2 * (outs[1] - outs[0]), atol=1e-4, rtol=1e-3)
    assert float((outs[1] - outs[0]).abs().max()) > 1e-4  # and not constant


@pytest.mark.parametrize("family", NO_BIAS)
def test_exact_transcoders_make_the_direct_effects_the_logit(family):
    lm = tiny(family)
    graph = attribution_graph(lm, PROMPT, exact(lm), GraphConfig(zero_first=False, batch_size=32))
    logits = lm(lm.tokenize(PROMPT)["input_ids"])[0, -1].float()
    demeaned = logits[graph.logit_ids] - logits.mean()
    k = len(graph.logit_ids)
    torch.testing.assert_close(graph.adjacency[-k:].sum(1), demeaned, atol=1e-4, rtol=1e-4)  # completeness 1
    if family != "gemma3_text":  # the true MLP is exact there; Gemma 3 adds a norm after it: its error is not 0
        assert graph.scores["replacement"] == pytest.approx(1.0) and graph.scores["completeness"] == pytest.approx(1.0)


def perturbed_value(lm, state, layer, pos, vector, target_layer, target_pos, w):
    """The target input (w . x) of the linearised model with ``vector`` added to the MLP output at (layer, pos)."""
    with torch.no_grad(), replacement(lm, state, add(Site(layer, "mlp_out"), vector, positions=[pos])) as taps:
        lm.model(input_ids=state.ids, use_cache=False)
        x = taps.cache[final_norm_site(lm)] if target_layer < 0 else taps.cache[Site(target_layer, "mlp_in")]
        return float(x[0, target_pos].float() @ w)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3_text", "qwen3", "gpt_neox"])
def test_edges_equal_finite_differences_of_the_linearised_model(family):
    lm = tiny(family)
    tcs = exact(lm)
    graph = attribution_graph(lm, PROMPT, tcs, GraphConfig(zero_first=False, batch_size=64))
    state = setup(lm, lm.tokenize(PROMPT)["input_ids"], tcs, zero_first=False)
    targets = logit_targets(lm, state.logits, graph.config)
    g = torch.Generator().manual_seed(1)
    n = graph.adjacency.shape[0]
    late = torch.nonzero(graph.features[:, 0] == lm.n_layers - 1).view(-1)
    for _ in range(4):
        s = int(torch.randint(graph.n_feat, (1,), generator=g))
        layer, pos, feat = graph.features[s].tolist()
        vector = graph.activations[s] * tcs[layer].decoder[feat]
        # on the top logit
        w = targets.vectors[0]
        base = perturbed_value(lm, state, layer, pos, 0 * vector, -1, state.n_pos - 1, w)
        moved = perturbed_value(lm, state, layer, pos, vector, -1, state.n_pos - 1, w)
        assert moved - base == pytest.approx(float(graph.adjacency[n - len(targets.ids), s]), rel=1e-3, abs=1e-5)
        # on a feature of the last layer
        t = int(late[int(torch.randint(len(late), (1,), generator=g))])
        t_layer, t_pos, t_feat = graph.features[t].tolist()
        enc = tcs[t_layer].encoder[t_feat]
        base = perturbed_value(lm, state, layer, pos, 0 * vector, t_layer, t_pos, enc)
        moved = perturbed_value(lm, state, layer, pos, vector, t_layer, t_pos, enc)
        assert moved - base == pytest.approx(float(graph.adjacency[t, s]), rel=1e-3, abs=1e-5)


def test_first_position_and_exploration_cap():
    lm = tiny("llama")
    full = attribution_graph(lm, PROMPT, exact(lm))  # zero_first: no feature nor error at position 0
    assert int((full.features[:, 1] == 0).sum()) == 0
    capped = attribution_graph(lm, PROMPT, exact(lm), GraphConfig(max_feature_nodes=40, batch_size=16))
    assert capped.n_feat == 40 and capped.active_features == full.active_features
    # the logit rows are the same edges, restricted to the explored features
    k = len(full.logit_ids)
    keys = {tuple(f): i for i, f in enumerate(full.features.tolist())}
    cols = torch.tensor([keys[tuple(f)] for f in capped.features.tolist()])
    torch.testing.assert_close(capped.adjacency[-k:, :40], full.adjacency[-k:, cols])


def test_pruning_and_scores_follow_circuit_tracer():
    # nodes: f0 f1 | e0 | t0 | logit; t0 -> f0 -> logit, t0 -> f1 (weak) -> logit, e0 -> logit
    a = torch.zeros(5, 5)
    a[0, 3], a[1, 3] = 2.0, 0.1  # token -> features
    a[4, 0], a[4, 1], a[4, 2] = 3.0, 0.01, 1.0  # features, error -> logit
    probs = torch.tensor([1.0])
    s = scores(a, probs, n_feat=2, n_errors=1, n_tokens=1)
    # by hand: the logit row normalised is (3, .01, 1) / 4.01; the features pass all of theirs to the token, so the
    # influences are f0 + f1 = 3.01 / 4.01, e0 = 1 / 4.01, t0 = 3.01 / 4.01; only the logit row has error input
    assert s["replacement"] == pytest.approx((3.01 / 4.01) / (3.01 / 4.01 + 1 / 4.01))
    assert s["completeness"] == pytest.approx((7.02 / 4.01 + (1 - 1 / 4.01)) / (7.02 / 4.01 + 1), rel=1e-5)
    kept = prune(a, probs, n_feat=2, n_tokens=1, node_threshold=0.8, edge_threshold=0.98)
    # node influences t0 .751, f0 .748, e0 .249, f1 .002: the first two carry 0.8 of the total (tokens and logits are
    # always kept), so the error node and the weak feature go
    assert kept.nodes.tolist() == [True, False, False, True, True]
    assert bool(kept.edges[4, 0]) and not bool(kept.edges[4, 1])


def test_result_round_trip_and_circuit_tracer_json(tmp_path):
    lm = tiny("llama")
    graph = attribution_graph(lm, PROMPT, exact(lm), GraphConfig(batch_size=32), source="exact MLPs")
    back = load_result(graph.save(tmp_path / "g"))
    assert isinstance(back, AttributionGraph) and torch.equal(back.adjacency, graph.adjacency)
    assert back.summary()["scores"] == graph.summary()["scores"]
    doc = json.loads(json.dumps(graph.to_json("demo")))
    assert set(doc) == {"metadata", "qParams", "nodes", "links"}
    assert doc["metadata"]["prompt_tokens"] == graph.tokens and doc["metadata"]["slug"] == "demo"
    types = {n["feature_type"] for n in doc["nodes"]}
    assert {"embedding", "logit"} <= types and types <= {"embedding", "logit", "cross layer transcoder",
                                                          "mlp reconstruction error"}
    ids = {n["node_id"] for n in doc["nodes"]}
    assert all(link["source"] in ids and link["target"] in ids for link in doc["links"])
    top = next(n for n in doc["nodes"] if n["is_target_logit"])
    assert top["node_id"] == f"{lm.n_layers + 1}_{int(graph.logit_ids[0])}_{graph.n_pos - 1}"


def test_targets_and_the_memory_cap():
    lm = tiny("llama")
    graph = attribution_graph(lm, PROMPT, exact(lm), targets=["Paris"])
    assert graph.logit_tokens == ["Paris"] and len(graph.logit_ids) == 1
    with pytest.raises(InputError, match="one token"):
        attribution_graph(lm, PROMPT, exact(lm), targets=["Paris France"])
    with pytest.raises(InputError, match="max-memory-gb"):
        attribution_graph(lm, PROMPT, exact(lm), GraphConfig(max_memory_gb=1e-6))


def test_saved_transcoders_in_the_models_units():
    from lmscope.methods.sae import SaeConfig, build_sae

    coder = build_sae(SaeConfig("topk", d_in=16, width=32, k=4, transcoder=True, skip=True))
    with torch.no_grad():
        coder.W_skip.normal_()
        coder.W_dec.normal_()  # a trained decoder (a new transcoder's starts at zero)
        coder.b_dec.normal_()
        coder.input_scale.fill_(2.0)
        coder.output_scale.fill_(0.5)
    x = torch.randn(5, 16)
    before = coder.output(x)
    layer = from_coder(coder, 3)
    torch.testing.assert_close(layer.output(x), before, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(coder.output(x), before, atol=1e-5, rtol=1e-5)  # its scales folded in, same outputs
    assert float(coder.input_scale) == float(coder.output_scale) == 1.0
    assert layer.decoder.data_ptr() == coder.W_dec.data_ptr()  # shared, not copied
    pre = coder.pre_acts(x * coder.input_scale)
    torch.testing.assert_close(x @ layer.encoder.T + coder.b_enc, pre, atol=1e-5, rtol=1e-5)


def test_removing_features_in_the_linearised_model_moves_the_logit_by_the_direct_edge():
    from lmscope.methods.graphs import intervene

    lm = tiny("gpt2")
    tcs = exact(lm)
    graph = attribution_graph(lm, PROMPT, tcs, GraphConfig(batch_size=64, node_threshold=0.95))
    checks = intervene(lm, graph, tcs, top=5, linearised=True)
    assert len(checks) == 5
    for c in checks:
        assert c.measured == pytest.approx(c.direct, rel=1e-3, abs=1e-6), c
    real = intervene(lm, graph, tcs, top=5)  # the real model: other numbers, same features
    assert [c.node for c in real] == [c.node for c in checks] and any(c.measured != c.direct for c in real)


def read_target(lm, state, ops, read, pos, w) -> float:
    """w . (the target's input) in the replacement model with ``ops``."""
    with torch.no_grad(), replacement(lm, state, *ops) as taps:
        lm.model(input_ids=state.ids, use_cache=False)
        return float(taps.cache[read][0, pos].float() @ w)


def test_head_loadings_are_the_edge_lost_without_the_head():
    from lmscope.methods.graphs.heads import _zero_head, head_loadings
    from lmscope.model.hooks import apply

    lm = tiny("llama")
    tcs = exact(lm)
    graph = attribution_graph(lm, PROMPT, tcs, GraphConfig(batch_size=64))
    loads = head_loadings(lm, graph, tcs, top_edges=4)
    assert len(loads) == 4 and all(len(e.heads) == 3 for e in loads)
    state = setup(lm, graph.input_ids[None], tcs, graph.config.zero_first)
    targets = logit_targets(lm, state.logits, graph.config, graph.logit_ids.tolist())
    n, k = graph.adjacency.shape[0], len(graph.logit_ids)
    label = {graph.label(i): i for i in range(n)}
    for edge in loads:
        t, s = label[edge.target], label[edge.source]
        layer, pos = graph.where(s)
        if graph.kind(s) == "feature":
            site, vector = Site(layer, "mlp_out"), graph.activations[s] * tcs[layer].decoder[int(graph.features[s, 2])]
        elif graph.kind(s) == "error":
            site, vector = Site(layer, "mlp_out"), state.errors[layer, pos]
        else:
            site, vector = Site(0, "embed"), state.tokens[pos]
        if graph.kind(t) == "logit":
            read, t_pos, w = final_norm_site(lm), graph.n_pos - 1, targets.vectors[t - n + k]
        else:
            t_layer, t_pos = graph.where(t)
            read, w = Site(t_layer, "mlp_in"), tcs[t_layer].encoder[int(graph.features[t, 2])]
        for head_layer, head, loading in edge.heads:
            zero = apply(Site(head_layer, "attn_heads"), _zero_head(head, lm.d_head))
            moved = [read_target(lm, state, [zero, add(site, v, positions=[pos])], read, t_pos, w)
                     for v in (vector, 0 * vector)]
            without = moved[0] - moved[1]  # the edge in the model without that head
            assert edge.weight - without == pytest.approx(loading, rel=1e-3, abs=1e-5)


def _corpus(tmp_path):
    from tests.helpers import write_corpus

    return write_corpus(tmp_path / "text.txt", extra_words=20, lengths=(30, 60), docs=40)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_exact_transcoders_replace_the_model_and_zero_ones_recover_nothing(family, tmp_path):
    from lmscope.methods.graphs import LayerTranscoder, ReplacementEvalConfig, evaluate_replacement

    lm = tiny(family)
    cfg = ReplacementEvalConfig(corpus=_corpus(tmp_path), split="all", tokens=512, seq_len=32, batch_size=4)
    exact_eval = evaluate_replacement(lm, exact(lm), cfg)
    assert exact_eval.layers == list(range(lm.n_layers)) and exact_eval.tokens > 0
    assert min(exact_eval.fve) > 1 - 1e-5 and exact_eval.ce_recovered == pytest.approx(1.0, abs=1e-4)
    assert exact_eval.ce_replaced == pytest.approx(exact_eval.ce_orig, abs=1e-4)
    d, n = lm.d_model, 8
    zero = {la: LayerTranscoder(la, lambda x: torch.zeros(*x.shape[:-1], n), torch.zeros(n, d), torch.zeros(d),
                                torch.zeros(n, d)) for la in range(lm.n_layers)}
    zero_eval = evaluate_replacement(lm, zero, cfg)
    assert zero_eval.ce_recovered == pytest.approx(0.0, abs=1e-6) and max(zero_eval.fve) <= 0
    assert zero_eval.ce_orig == exact_eval.ce_orig and zero_eval.ce_zero == exact_eval.ce_zero
    assert all(z == 0 for z in zero_eval.l0) and min(exact_eval.l0) > 0
    path = zero_eval.save(tmp_path / "r")
    assert load_result(path).summary() == zero_eval.summary()


def test_the_intervention_check_holds_both_measurements_and_round_trips(tmp_path):
    from lmscope.methods.graphs import check_graph

    lm = tiny("gpt2")
    coders = exact(lm)
    graph = attribution_graph(lm, PROMPT, coders, GraphConfig(batch_size=64, node_threshold=0.95))
    check = check_graph(lm, graph, coders, top=5)
    assert len(check.rows) == 5 and check.target == graph.logit_tokens[0]
    for row in check.rows:  # frozen everything else: the measured change is the graph's direct edge
        assert row["measured_replacement"] == pytest.approx(row["direct"], rel=1e-3, abs=1e-6)
    assert any(row["measured"] != row["direct"] for row in check.rows)  # the real model recomputes the rest
    corr = check.agreement()
    assert set(corr) == {"direct", "total"} and all(v is None or -1 - 1e-9 <= v <= 1 + 1e-9 for v in corr.values())
    again = load_result(check.save(tmp_path / "c"))
    assert again.rows == check.rows and again.summary() == check.summary()
