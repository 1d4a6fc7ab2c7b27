"""Image neurons at the method level: caption bounds and multi-token caption words (issue 25)."""

import pytest

from lmscope.errors import ConfigError
from lmscope.methods.neurons import AblationConfig, CaptionConfig
from lmscope.methods.neurons.vision import caption_targets, word_tokens
from tests.helpers import tiny_lm

PIECES = {1: " a", 2: " cap", 3: "ital", 4: " Paris", 5: "."}


def _decode(ids: list[int]) -> str:
    return "".join(PIECES[i] for i in ids)


def test_word_tokens_counts_the_pieces_of_a_caption_word():
    caption = [1, 2, 3, 4, 5]  # " a capital Paris."
    assert word_tokens(_decode, caption, 1, "capital") == 2
    assert word_tokens(_decode, caption, 3, "Paris") == 1  # the full stop is not part of the word
    assert word_tokens(_decode, [2], 0, "capital") == 1  # a caption cut mid-word: what there is


@pytest.mark.parametrize("tokens", [0, -3, 65])
def test_caption_length_is_bounded_before_anything_runs(tokens):
    with pytest.raises(ConfigError, match="caption-tokens must be in 1..64"):
        CaptionConfig(caption_tokens=tokens)
    with pytest.raises(ConfigError, match="caption-tokens must be in 1..64"):
        caption_targets(tiny_lm("llama"), None, "x", tokens)  # refused before the model is asked anything


def test_the_ablation_control_needs_a_random_set():
    with pytest.raises(ConfigError, match="random-sets must be at least one, got 0: .*control"):
        AblationConfig(random_sets=0)
    with pytest.raises(ConfigError, match="random-sets must be in 1..1,000"):
        AblationConfig(random_sets=10**6)
