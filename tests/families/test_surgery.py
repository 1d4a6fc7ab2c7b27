"""Block surgery: rows that start at different blocks (staggered_start) and start_after, on every family."""

import pytest
import torch

import lmscope
from lmscope import Site
from lmscope.model.hooks import capture
from lmscope.model.surgery import staggered_start, start_after
from tests.helpers import tiny_model, tiny_tokenizer

PROMPT = "The Eiffel Tower is in the capital of France"


def _setup(family):
    lm = lmscope.load((tiny_model(family), tiny_tokenizer()))
    ids = lm.tokenize(PROMPT)["input_ids"]
    logits, cache = lm.run_with_cache(ids, lm.sites("resid_post"))
    return lm, ids, logits, cache


def test_rows_started_from_the_clean_stream_give_the_clean_output(family):
    lm, ids, logits, cache = _setup(family)
    starts = [-1, 0, 0, 1, lm.n_layers - 1]
    resid = torch.cat([cache[Site(max(s, 0), "resid_post")] for s in starts])  # (rows, pos, d)
    with torch.no_grad(), staggered_start(lm, starts, resid):
        out = lm.model(input_ids=ids.expand(len(starts), -1), use_cache=False).logits
    torch.testing.assert_close(out, logits.expand(len(starts), -1, -1), atol=1e-5, rtol=0)


def test_each_row_equals_its_own_start_after_run():
    lm, ids, _, cache = _setup("llama")
    starts = [0, 1, 1]
    resid = torch.stack([cache[Site(s, "resid_post")][0] + 0.5 * torch.randn(ids.shape[1], lm.d_model)
                         for s in starts])
    with torch.no_grad():
        with staggered_start(lm, starts, resid):
            together = lm.model(input_ids=ids.expand(3, -1), use_cache=False).logits
        for row, s in enumerate(starts):
            with start_after(lm, s, resid[row:row + 1]):
                alone = lm.model(input_ids=ids, use_cache=False).logits
            torch.testing.assert_close(together[row:row + 1], alone, atol=1e-5, rtol=0)


def test_hooks_inside_a_block_see_only_the_rows_that_run_it():
    lm, ids, _, cache = _setup("llama")
    starts = [0, 0, 1]
    resid = torch.cat([cache[Site(s, "resid_post")] for s in starts])
    with torch.no_grad(), staggered_start(lm, starts, resid), lm.hooks(lmscope.capture(Site(1, "mlp_out"))) as c:
        lm.model(input_ids=ids.expand(3, -1), use_cache=False)
    assert c[Site(1, "mlp_out")].shape[0] == 2


def test_staggered_start_checks_order_and_always_restores():
    lm, ids, logits, cache = _setup("llama")
    blocks = list(lm.layout.blocks)
    with pytest.raises(lmscope.ConfigError, match="sorted"):
        with staggered_start(lm, [1, 0], cache[Site(0, "resid_post")].expand(2, -1, -1)):
            pass
    with pytest.raises(RuntimeError, match="boom"):
        with staggered_start(lm, [0], cache[Site(0, "resid_post")]):
            raise RuntimeError("boom")
    container = lm.model.get_submodule(lm.layout.spec.blocks)
    assert list(container) == blocks
    torch.testing.assert_close(lm(ids), logits, atol=0, rtol=0)


def test_a_swapped_block_keeps_its_own_attention_type():
    """Gemma 3 picks masks and rotary embeddings by slot: a moved block must take its own with it."""
    from lmscope.model.surgery import delete_blocks, swap_blocks

    lm, ids, _, cache = _setup("gemma3_text")  # sliding, sliding, full
    types = list(lm.config.layer_types)
    with torch.no_grad():
        with swap_blocks(lm, 1):
            assert lm.config.layer_types == [types[0], types[2], types[1]]
            swapped = lm.model(input_ids=ids, use_cache=False).logits
        site = Site(2, "resid_post")  # by hand: block 2 at its own slot on the stream under block 1, then block 1
        with start_after(lm, 0, cache[Site(0, "resid_post")]), delete_blocks(lm, 1), lm.hooks(capture(site)) as c:
            lm.model(input_ids=ids, use_cache=False)
        with start_after(lm, 0, c[site]), delete_blocks(lm, 2):
            by_hand = lm.model(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(swapped, by_hand, atol=1e-5, rtol=0)
    with pytest.raises(RuntimeError), swap_blocks(lm, 1):
        raise RuntimeError
    assert lm.config.layer_types == types
