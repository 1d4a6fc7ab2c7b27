"""Fixtures of the SAE tests: a tiny model, a small text corpus, small harvest / training settings, a private store,
and an SAE that reconstructs exactly.

Shared by tests/methods/sae (through its conftest.py) and tests/cli/test_sae_cli.py, which import them by name."""


import pytest
import torch

from lmscope.methods.sae import HarvestConfig, SaeConfig, TrainConfig, build_sae
from tests.helpers import tiny_lm, write_corpus

WORDS = ["The", "capital", "of", "France", "is", "Paris", "Eiffel", "Tower", "located", "in", "city", "the", "a"]


@pytest.fixture(autouse=True)
def private_store(store_dir):
    return store_dir


@pytest.fixture
def corpus(tmp_path) -> str:
    return write_corpus(tmp_path / "corpus.txt", extra_words=60, lengths=(5, 40), docs=300)


@pytest.fixture
def lm():
    return tiny_lm()


@pytest.fixture
def harvest_cfg(corpus) -> HarvestConfig:
    return HarvestConfig(corpus=corpus, split="all", seq_len=16, batch_size=4, tokens=2048, buffer_rows=512)


@pytest.fixture
def train_cfg() -> TrainConfig:
    return TrainConfig(batch_tokens=64, warmup_steps=3, checkpoint_every=5, dead_tokens=256)


def exact_sae(d: int):
    """A ReLU SAE with W_enc = [I, -I]: x_hat = ReLU(x) - ReLU(-x) = x, exactly."""
    sae = build_sae(SaeConfig("relu", d_in=d, width=2 * d))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()
