"""The token and generation helpers every method shares, and the context-length check, on every family."""

import pytest
import torch

import lmscope
from lmscope.model.generate import greedy, sample_from_start, sample_ids
from lmscope.model.tokens import pad, subject_last_token, subject_span, target_ids
from tests.helpers import tiny_lm

PROMPT = "The Eiffel Tower is located in the city of"


def test_subject_span_and_last_token():
    lm = tiny_lm()
    ids, span = subject_span(lm, PROMPT, "Eiffel Tower")
    assert span == (1, 3) and lm.to_str_tokens(ids[span[0]:span[1]]) == ["Eiffel", "Tower"]
    ids2, last = subject_last_token(lm, "The {} is located in the city of", "Eiffel Tower")
    assert ids2 == ids and last == 2
    # the template's own position wins over an earlier occurrence of the subject's text
    _, last = subject_last_token(lm, "Paris city of {}", "Paris")
    assert last == 3  # not 0, where "Paris" first occurs
    with pytest.raises(lmscope.SubjectError, match="not in the prompt"):
        subject_span(lm, PROMPT, "Rome")
    with pytest.raises(lmscope.SubjectError, match="empty subject"):
        subject_span(lm, PROMPT, " ")


def test_pad_both_sides():
    ids, mask = pad([[5, 6, 7], [8]], "cpu", pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad([[5, 6, 7], [8]], "cpu", side="left", pad_id=2, min_width=4)
    assert ids.tolist() == [[2, 5, 6, 7], [2, 2, 2, 8]] and mask.tolist() == [[0, 1, 1, 1], [0, 0, 0, 1]]


def test_target_ids():
    lm = tiny_lm()
    assert target_ids(lm, "Paris") == [9]
    with pytest.raises(lmscope.InputError, match="empty target"):
        target_ids(lm, "")


def test_prompts_longer_than_the_context_are_refused(family):
    lm = tiny_lm(family)
    limit = lm.context_length
    assert limit == 64
    long_prompt = " ".join(["the"] * (limit + 5))
    with pytest.raises(lmscope.InputError, match=f"more than the {limit} positions"):
        lm.tokenize(long_prompt)
    with pytest.raises(lmscope.InputError, match="context length"):
        lm(torch.full((1, limit + 1), 5))
    with pytest.raises(lmscope.InputError, match="context length"):
        lmscope.logit_lens(lm, long_prompt)
    assert lm(torch.full((1, limit), 5)).shape[1] == limit  # exactly the context is fine


@pytest.mark.parametrize("family_name", ["llama", "gpt2"])
def test_generation_helpers(family_name):
    lm = tiny_lm(family_name)
    ids = lm.tokenize("The capital of")["input_ids"]
    with torch.no_grad():
        expected = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=3,
                                     do_sample=False, pad_token_id=0)
    assert greedy(lm, "The capital of", 3) == lm.tokenizer.decode(expected[0, 3:], skip_special_tokens=True)
    rows = sample_ids(lm, ["The capital of", "Paris"], 6, 1, seeds=[0, 1])  # top-1: greedy, row by row
    assert rows[0][:6] == expected[0, :6].tolist() and len(rows[1]) == 6
    assert sample_from_start(lm, 0, 4, seed=0) == []
    texts = sample_from_start(lm, 3, 4, seed=0)
    assert len(texts) == 3 and texts == sample_from_start(lm, 3, 4, seed=0)


def test_mlp_value_is_what_w_out_writes(family):
    lm = tiny_lm(family)
    ids = lm.tokenize(PROMPT)["input_ids"]
    _, cache = lm.run_with_cache(ids, [lmscope.Site(1, "mlp_key"), lmscope.Site(1, "mlp_value")])
    w_out = lm.W_out(1)  # (d_model, d_mlp)
    bias = getattr(lm.layout.part(1, "mlp_out_proj"), "bias", None)
    expected = cache[lmscope.Site(1, "mlp_key")] @ w_out.T + (0 if bias is None else bias)
    torch.testing.assert_close(cache[lmscope.Site(1, "mlp_value")], expected, atol=1e-5, rtol=1e-4)
