"""Test helpers: tiny random Hugging Face models for every supported family, a tiny tokenizer, a wrapped LM.

Imported by the tests as ``tests.helpers``; fixtures live in ``conftest.py`` files.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers as T

import lmscope

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

COMMON = dict(vocab_size=97, bos_token_id=1, eos_token_id=2, pad_token_id=0)
LLAMA_LIKE = dict(num_hidden_layers=3, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=48, max_position_embeddings=64, **COMMON)

#: model_type -> config factory. Every family in lmscope.FAMILIES must appear here (checked by a test).
TINY_CONFIGS = {
    "llama": lambda: T.LlamaConfig(**LLAMA_LIKE),
    "mistral": lambda: T.MistralConfig(**LLAMA_LIKE, sliding_window=4),
    "qwen2": lambda: T.Qwen2Config(**LLAMA_LIKE),
    "qwen3": lambda: T.Qwen3Config(**LLAMA_LIKE, head_dim=8),
    "gemma": lambda: T.GemmaConfig(**LLAMA_LIKE, head_dim=8),
    "gemma2": lambda: T.Gemma2Config(**LLAMA_LIKE, head_dim=8, sliding_window=4, final_logit_softcapping=30.0,
                                     attn_logit_softcapping=50.0),
    "gemma3_text": lambda: T.Gemma3TextConfig(**LLAMA_LIKE, head_dim=8, sliding_window=4,
                                              layer_types=["sliding_attention", "sliding_attention",
                                                           "full_attention"]),
    "gpt2": lambda: T.GPT2Config(n_layer=3, n_embd=32, n_head=4, n_positions=64, **COMMON),
    "gpt_neox": lambda: T.GPTNeoXConfig(num_hidden_layers=3, hidden_size=32, num_attention_heads=4,
                                        intermediate_size=48, max_position_embeddings=64, **COMMON),
    "gptj": lambda: T.GPTJConfig(n_layer=3, n_embd=32, n_head=4, rotary_dim=4, n_positions=64, **COMMON),
    "phi": lambda: T.PhiConfig(num_hidden_layers=3, hidden_size=32, num_attention_heads=4, intermediate_size=48,
                               max_position_embeddings=64, **COMMON),
}
FAMILY_NAMES = sorted(TINY_CONFIGS)


def tiny_model(model_type: str, attn: str | None = None, seed: int = 0) -> torch.nn.Module:
    """A tiny random causal LM of the given family (default attention: SDPA where supported), in eval mode."""
    torch.manual_seed(seed)
    model = T.AutoModelForCausalLM.from_config(TINY_CONFIGS[model_type](), attn_implementation=attn)
    return model.eval()


def tiny_tokenizer() -> T.PreTrainedTokenizerFast:
    """A word-level tokenizer over 97 ids: specials, the words below, and w0..wN fillers."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<pad>", "<bos>", "<eos>", "<unk>", "The", "capital", "of", "France", "is", "Paris", "Eiffel",
             "Tower", "located", "in", "city", "the", "a"]
    vocab = {w: i for i, w in enumerate(words + [f"w{i}" for i in range(97 - len(words))])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return T.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                     unk_token="<unk>", pad_token="<pad>")


def sharpen(lm):
    """Scale the final norm x10 in place, so that a tiny random model's probabilities react to interventions."""
    with torch.no_grad():
        w = lm.layout.final_norm.weight
        w.add_(9.0) if float(w.abs().mean()) < 0.5 else w.mul_(10.0)  # Gemma norms scale by (1 + w)
    return lm


def tiny_lm(family: str = "llama", seed: int = 0, sharp: bool = False):
    """A tiny random model of ``family`` with the tiny tokenizer, wrapped as an LM (``sharp``: see :func:`sharpen`)."""
    lm = lmscope.load((tiny_model(family, seed=seed), tiny_tokenizer()))
    return sharpen(lm) if sharp else lm


WORDS = ["The", "capital", "of", "France", "is", "Paris", "Eiffel", "Tower", "located", "in", "city", "the", "a"]


def write_corpus(path: Path, extra_words: int, lengths: tuple[int, int], docs: int, seed: int = 0) -> str:
    """A small text corpus (documents of random words, blank-line separated) at ``path``; returns its path."""
    import random

    rng = random.Random(seed)
    words = WORDS + [f"w{i}" for i in range(extra_words)]
    path.write_text("\n\n".join(" ".join(rng.choices(words, k=rng.randint(*lengths))) for _ in range(docs)))
    return str(path)
