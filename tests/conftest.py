"""Shared fixtures: every supported family, a saved tiny model folder, the reference data, a private store."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import FAMILY_NAMES, SHARED_DATA, tiny_model, tiny_tokenizer


@pytest.fixture(params=FAMILY_NAMES)
def family(request) -> str:
    return request.param


@pytest.fixture
def tiny_llama_dir(tmp_path) -> Path:
    """A saved tiny Llama + tokenizer folder (loadable by path, like any local HF model)."""
    folder = tmp_path / "tiny-llama"
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def store_dir(tmp_path, monkeypatch) -> Path:
    """A private, empty lmscope store for this test."""
    monkeypatch.setenv("LMSCOPE_CACHE", str(tmp_path / "store"))
    return tmp_path / "store"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (the project expects ../shared beside it)")
    return SHARED_DATA
