"""What the projector tests share with tests/cli/test_projector_cli.py: tiny text and vision model folders."""

import pytest
import torch
import transformers as T

from tests.helpers import tiny_model, tiny_tokenizer


@pytest.fixture
def folders(tmp_path):
    """A tiny Llama + tokenizer folder (its word "w50", made special, serves as the image token) and a tiny DINOv2."""
    text = tmp_path / "text"
    tiny_model("llama").save_pretrained(text)
    tok = tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["w50"]})
    tok.save_pretrained(text)
    vision = tmp_path / "vision"
    torch.manual_seed(0)
    T.Dinov2Model(T.Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                 patch_size=14, image_size=28)).save_pretrained(vision)
    return text, vision
