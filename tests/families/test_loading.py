"""The registry and loading: cache hit, corrupt cache rebuilt, unknown names, local folders, no pickle, GGUF parity."""

import json
import os
from pathlib import Path

import pytest
import torch

import lmscope
from lmscope.model import loading
from lmscope.model.loading import MANIFEST, REGISTRY, ModelNotFoundError
from tests.helpers import tiny_model, tiny_tokenizer

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


def test_same_size_overwrite_is_rebuilt(fake_bundle, caplog):
    """Zeroing bytes inside the tensor data keeps the size and the header: only the sha256 can tell."""
    entry, calls = fake_bundle
    lmscope.load("tiny-test")
    weights = entry.converted_dir() / "model.safetensors"
    before = weights.stat()
    data = bytearray(weights.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    weights.write_bytes(bytes(data))
    if weights.stat().st_mtime_ns == before.st_mtime_ns:  # a coarse file-system clock: make the write visible
        os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    assert weights.stat().st_size == before.st_size
    lm = lmscope.load("tiny-test")
    assert len(calls) == 2
    assert "unusable" in caplog.text and "sha256" in caplog.text
    assert torch.equal(lm(IDS), tiny_model("llama")(IDS).logits)


def test_touched_file_is_rehashed_once_not_rebuilt(fake_bundle, monkeypatch):
    """A new mtime with the same bytes: re-hash, keep the conversion, store the new mtime; unchanged: no hashing."""
    entry, calls = fake_bundle
    lmscope.load("tiny-test")
    hashed = []
    real_sha256 = loading.sha256_file
    monkeypatch.setattr(loading, "sha256_file", lambda path, *a, **kw: hashed.append(path.name) or real_sha256(path))
    lmscope.load("tiny-test")
    assert hashed == [] and len(calls) == 1  # size and mtime unchanged: trusted without hashing
    folder = entry.converted_dir()
    weights = folder / "model.safetensors"
    new_mtime = weights.stat().st_mtime_ns + 5 * 10**9
    os.utime(weights, ns=(new_mtime, new_mtime))  # touch
    lm = lmscope.load("tiny-test")
    assert len(calls) == 1 and hashed == ["model.safetensors"]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["files"]["model.safetensors"]["mtime_ns"] == new_mtime
    assert torch.equal(lm(IDS), tiny_model("llama")(IDS).logits)
    lmscope.load("tiny-test")
    assert len(calls) == 1 and hashed == ["model.safetensors"]  # the manifest now knows the new mtime


def test_format_1_manifest_is_rebuilt(fake_bundle, caplog):
    """A manifest of the old format (file sizes only) is rebuilt once into the current format."""
    entry, calls = fake_bundle
    lmscope.load("tiny-test")
    folder = entry.converted_dir()
    sizes = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file() and p.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps({"format": 1, "source": "bundled:tiny-test", "files": sizes}))
    lmscope.load("tiny-test")
    assert len(calls) == 2 and "unusable" in caplog.text
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["format"] == loading.CONVERSION_FORMAT == 2
    lmscope.load("tiny-test")
    assert len(calls) == 2


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


@pytest.fixture
def tiny_llama_pickle_dir(tmp_path) -> Path:
    """A tiny Llama folder whose weights are a pickle ``pytorch_model.bin`` (no safetensors)."""
    folder = tmp_path / "tiny-llama-pickle"
    folder.mkdir()
    model = tiny_model("llama")
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    model.config.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def test_pickle_only_folder_is_refused(tiny_llama_pickle_dir):
    with pytest.raises(ModelNotFoundError, match=r"only pickle weights.*pytorch_model\.bin.*safetensors only"
                                                 r".*safe_serialization=True.*allow_pickle=True"):
        lmscope.load(str(tiny_llama_pickle_dir))


def test_pickle_only_folder_loads_with_allow_pickle(tiny_llama_pickle_dir, caplog):
    lm = lmscope.load(str(tiny_llama_pickle_dir), allow_pickle=True)
    assert "pickle" in caplog.text and "allow_pickle=True" in caplog.text
    assert torch.equal(lm(IDS), tiny_model("llama")(IDS).logits)


def test_safetensors_folder_loads_with_use_safetensors(tiny_llama_dir, monkeypatch):
    seen = {}
    real = loading._from_pretrained

    def spy(source, device, dtype, use_safetensors="not passed", **kwargs):
        seen["use_safetensors"] = use_safetensors
        return real(source, device, dtype, use_safetensors=use_safetensors, **kwargs)

    monkeypatch.setattr(loading, "_from_pretrained", spy)
    (tiny_llama_dir / "stray.bin").write_bytes(b"not weights")  # safetensors present: any .bin is ignored
    lm = lmscope.load(str(tiny_llama_dir))
    assert seen["use_safetensors"] is True
    assert torch.equal(lm(IDS), tiny_model("llama")(IDS).logits)


@pytest.mark.parametrize("allow_pickle, expected", [(False, True), (True, None)])
def test_hub_ids_ask_for_safetensors(monkeypatch, allow_pickle, expected):
    monkeypatch.setattr(loading, "_hub_reachable", lambda: True)
    seen = {}

    def fake(source, device, dtype, use_safetensors="not passed", **kwargs):
        seen.update(source=source, use_safetensors=use_safetensors)
        return tiny_model("llama"), tiny_tokenizer(), None

    monkeypatch.setattr(loading, "_from_pretrained", fake)
    lm = lmscope.load("someone/some-model", allow_pickle=allow_pickle)
    assert seen == {"source": "someone/some-model", "use_safetensors": expected} and lm.name == "someone/some-model"


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
    weights = entry.converted_dir() / "model.safetensors"
    assert manifest["files"]["model.safetensors"] == {"size": weights.stat().st_size,
                                                      "mtime_ns": weights.stat().st_mtime_ns,
                                                      "sha256": loading.sha256_file(weights)}


def _overwrite_keeping_mtime(weights: Path) -> None:
    """Zero 64 bytes inside the tensor data, then restore the old mtime (``touch -r``): size and mtime match."""
    before = weights.stat()
    data = bytearray(weights.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert weights.stat().st_size == before.st_size and weights.stat().st_mtime_ns == before.st_mtime_ns


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_verify_rehashes_and_rebuilds_a_change_with_the_old_mtime(fake_bundle, how, caplog, monkeypatch):
    entry, calls = fake_bundle
    lmscope.load("tiny-test")
    _overwrite_keeping_mtime(entry.converted_dir() / "model.safetensors")
    assert not torch.equal(lmscope.load("tiny-test")(IDS), tiny_model("llama")(IDS).logits)  # trusted: documented
    assert len(calls) == 1
    if how == "environment":
        monkeypatch.setenv(loading.VERIFY_ENV, "1")
    lm = lmscope.load("tiny-test", verify=True) if how == "argument" else lmscope.load("tiny-test")
    assert len(calls) == 2 and "same size and mtime, but its sha256 no longer matches" in caplog.text
    assert torch.equal(lm(IDS), tiny_model("llama")(IDS).logits)
    hashed = []
    real_sha256 = loading.sha256_file
    monkeypatch.setattr(loading, "sha256_file", lambda path, *a, **kw: hashed.append(path.name) or real_sha256(path))
    lmscope.load("tiny-test", verify=True)
    assert len(calls) == 2 and "model.safetensors" in hashed  # hashed again, and sound: kept
    hashed.clear()
    lmscope.load("tiny-test", verify=False)
    assert hashed == []


def test_list_models_verify(fake_bundle):
    entry, calls = fake_bundle
    lmscope.load("tiny-test")
    assert "verified" not in {r["name"]: r for r in lmscope.list_models()}["tiny-test"]
    _overwrite_keeping_mtime(entry.converted_dir() / "model.safetensors")
    row = {r["name"]: r for r in lmscope.list_models(verify=True)}["tiny-test"]
    assert len(calls) == 2 and row["cached"] and not row["verified"] and "sha256" in row["rebuilt"]
    row = {r["name"]: r for r in lmscope.list_models(verify=True)}["tiny-test"]
    assert len(calls) == 2 and row["cached"] and row["verified"] and "rebuilt" not in row
    (entry.converted_dir() / "model.safetensors").write_bytes(b"short")
    row = {r["name"]: r for r in lmscope.list_models()}["tiny-test"]  # listing alone does not rebuild
    assert len(calls) == 2 and not row["cached"] and "wrong size" in row["problem"]


def test_verify_a_local_folder_holding_a_conversion(fake_bundle, tiny_llama_dir):
    entry, _ = fake_bundle
    lmscope.load("tiny-test")
    folder = entry.converted_dir()
    lmscope.load(str(folder), verify=True)
    lmscope.load(str(tiny_llama_dir), verify=True)  # no manifest: nothing to verify against, loads
    _overwrite_keeping_mtime(folder / "model.safetensors")
    with pytest.raises(lmscope.ArtifactError, match="does not match its manifest.*sha256.*bundled name"):
        lmscope.load(str(folder), verify=True)


def test_folder_without_weights_or_tokenizer(tiny_llama_dir, tmp_path):
    folder = tmp_path / "partial"
    folder.mkdir()
    (folder / "config.json").write_bytes((tiny_llama_dir / "config.json").read_bytes())
    with pytest.raises(ModelNotFoundError, match="has a config.json but no weights"):
        lmscope.load(str(folder))
    (folder / "model.safetensors").write_bytes((tiny_llama_dir / "model.safetensors").read_bytes())
    with pytest.raises(ModelNotFoundError, match="could not read the tokenizer") as err:
        lmscope.load(str(folder))
    assert "\n" not in str(err.value)
