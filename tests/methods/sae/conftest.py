"""Fixtures of the SAE tests: a tiny model, a small text corpus, small harvest / training settings, a private store."""

import random

import pytest

from lmscope.methods.sae import HarvestConfig, TrainConfig
from tests.helpers import tiny_lm

WORDS = ["The", "capital", "of", "France", "is", "Paris", "Eiffel", "Tower", "located", "in", "city", "the", "a"]


@pytest.fixture(autouse=True)
def private_store(store_dir):
    return store_dir


@pytest.fixture
def corpus(tmp_path) -> str:
    rng = random.Random(0)
    words = WORDS + [f"w{i}" for i in range(60)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(" ".join(rng.choices(words, k=rng.randint(5, 40))) for _ in range(300)))
    return str(path)


@pytest.fixture
def lm():
    return tiny_lm()


@pytest.fixture
def harvest_cfg(corpus) -> HarvestConfig:
    return HarvestConfig(corpus=corpus, split="all", seq_len=16, batch_size=4, tokens=2048, buffer_rows=512)


@pytest.fixture
def train_cfg() -> TrainConfig:
    return TrainConfig(batch_tokens=64, warmup_steps=3, checkpoint_every=5, dead_tokens=256)
