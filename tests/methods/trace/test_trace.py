"""Causal tracing: the fast batched trace equals ROME's cell-by-cell procedure on every family; its properties,
errors and round trip."""

import pytest
import torch

import lmscope
from lmscope.errors import SubjectError
from lmscope.methods.trace import TraceConfig, TraceResult, causal_trace, reference_trace, restored_prob, window_layers
from lmscope.methods.trace.engine import Cell, cell_start, plan
from lmscope.model.kv import supports_prefix
from tests.helpers import tiny_lm

PROMPT = "The Eiffel Tower is in the capital of France is"
SUBJECT = "Eiffel Tower"
CFG = dict(samples=3, window=2, noise=2.0, sever=("mlp", "attn"))


def tiny(family="llama"):
    """A tiny random model with a sharpened output, so that probabilities react to noise."""
    return tiny_lm(family, sharp=True)


def test_fast_trace_equals_reference(family):
    lm = tiny(family)
    config = TraceConfig(**CFG, batch_tokens=40)  # small batches: exercises chunking too
    fast = causal_trace(lm, PROMPT, SUBJECT, config=config)
    ref = reference_trace(lm, PROMPT, SUBJECT, config=config)
    assert set(fast.scores) == set(ref) == {"hidden", "mlp", "attn", "hidden_sever_mlp", "hidden_sever_attn"}
    for kind, scores in ref.items():
        torch.testing.assert_close(fast.scores[kind], scores, atol=1e-5, rtol=0, msg=kind)
    assert fast.subject_range == (1, 3) and fast.tokens[1:3] == ["Eiffel", "Tower"]
    assert float(ref["hidden"].max() - ref["hidden"].min()) > 1e-4  # the comparison is not vacuous


def test_every_family_reuses_the_corrupted_prefix(family):
    assert supports_prefix(tiny(family))  # so the test above covers the KV-prefix path on every family


@pytest.mark.parametrize("family_name", ["llama", "gpt2"])
def test_trace_without_a_prefix_cache_equals_reference(family_name):
    lm = tiny(family_name)
    lm._trace_prefix_ok = False  # as for a model that cannot take a KV cache: whole prompts, same numbers
    config = TraceConfig(**CFG, batch_tokens=64)
    fast = causal_trace(lm, PROMPT, SUBJECT, config=config)
    ref = reference_trace(lm, PROMPT, SUBJECT, config=config)
    for kind, scores in ref.items():
        torch.testing.assert_close(fast.scores[kind], scores, atol=1e-5, rtol=0, msg=kind)


@pytest.mark.parametrize("use_prefix", [True, False])
def test_plan_runs_every_cell_once_within_limits(use_prefix):
    cells = [Cell(k, layer, t, sever) for k, sever in [("hidden", None), ("mlp", None), ("hidden", "attn")]
             for t in range(2, 9) for layer in range(6)]
    batches = plan(cells, window=4, n_layers=6, n_pos=9, samples=3, max_tokens=100, max_rows=24,
                   use_prefix=use_prefix)
    planned = [c for _, group in batches for c in group]
    assert len(planned) == len(cells) and set(planned) == set(cells)
    for t0, group in batches:
        starts = [cell_start(c, 4, 6) for c in group]
        assert starts == sorted(starts) and len(group) * 3 <= 24
        assert len(group) * 3 * (9 - t0) <= 100 or len(group) == 1
        assert all(c.t == t0 for c in group) if use_prefix else t0 == 0


def test_trace_properties():
    lm = tiny()
    result = causal_trace(lm, PROMPT, SUBJECT, config=TraceConfig(**CFG))
    hidden = result.scores["hidden"]
    # the last token at the last layer is the clean output; tokens before the subject change nothing
    assert hidden[-1, -1].item() == pytest.approx(result.clean_prob, abs=1e-5)
    assert torch.all(hidden[0] == result.corrupted_prob)
    assert result.total_effect == pytest.approx(result.clean_prob - result.corrupted_prob)


def test_zero_noise_gives_a_flat_trace():
    lm = tiny()
    flat = causal_trace(lm, PROMPT, SUBJECT, config=TraceConfig(**{**CFG, "noise": 0.0}))
    assert flat.corrupted_prob == pytest.approx(flat.clean_prob, abs=1e-6)
    for scores in flat.scores.values():
        torch.testing.assert_close(scores, torch.full_like(scores, flat.clean_prob), atol=1e-5, rtol=0)


def test_restoring_every_subject_token_gives_clean(family):
    lm = tiny(family)
    config = TraceConfig(**CFG)
    result = causal_trace(lm, PROMPT, SUBJECT, config=config)
    span = list(range(*result.subject_range))
    embeddings = {lmscope.Site(0, "resid_pre"): span}
    every_layer = {lmscope.Site(layer, "resid_pre"): span for layer in range(lm.n_layers)}
    for restore in (embeddings, every_layer):
        assert restored_prob(lm, PROMPT, SUBJECT, restore, config=config) == pytest.approx(result.clean_prob, abs=1e-5)
    if family == "llama":  # too late: at layer 1 the noise has already reached the tokens after the subject
        later = {lmscope.Site(1, "resid_pre"): span}
        assert restored_prob(lm, PROMPT, SUBJECT, later, config=config) != pytest.approx(result.clean_prob, abs=1e-3)
    assert restored_prob(lm, PROMPT, SUBJECT, {}, config=config) == pytest.approx(result.corrupted_prob, abs=1e-6)


def test_window_layers_match_rome():
    assert list(window_layers(0, 10, 30)) == list(range(0, 5))
    assert list(window_layers(15, 10, 30)) == list(range(10, 20))
    assert list(window_layers(29, 10, 30)) == list(range(24, 30))
    assert list(window_layers(3, 1, 30)) == [3]


def test_round_trip(tmp_path):
    lm = tiny()
    result = causal_trace(lm, PROMPT, SUBJECT, target="Paris", config=TraceConfig(**CFG))
    back = TraceResult.load(result.save(tmp_path / "trace"))
    assert back.config == result.config and back.tokens == result.tokens and back.target == "Paris"
    assert back.subject_range == result.subject_range and back.clean_prob == result.clean_prob
    assert all(torch.equal(back.scores[k], v) for k, v in result.scores.items())


def test_errors():
    lm = tiny()
    with pytest.raises(SubjectError, match=r"not in the prompt.*\['The', 'Eiffel'"):
        causal_trace(lm, PROMPT, "Colosseum")
    with pytest.raises(lmscope.InputError, match="empty prompt"):
        causal_trace(lm, "  ", "x")
    with pytest.raises(lmscope.InputError, match="empty target"):
        causal_trace(lm, PROMPT, SUBJECT, target="")
    with pytest.raises(lmscope.ConfigError, match="unknown trace kind"):
        TraceConfig(kinds=("resid",))


def test_multi_token_target_traces_first_token():
    lm = tiny()
    result = causal_trace(lm, PROMPT, SUBJECT, target="Paris France", config=TraceConfig(**CFG, kinds=("hidden",)))
    assert result.target == "Paris" and "first token" in result.notes[0]
