"""Sparse-autoencoder architectures, one module each behind :class:`.base.SparseAutoencoder`."""

import torch

from lmscope.methods.sae.arch.base import ForwardOutput, SparseAutoencoder, geometric_median
from lmscope.methods.sae.arch.batchtopk import BatchTopKSAE
from lmscope.methods.sae.arch.relu import ReluSAE
from lmscope.methods.sae.arch.tied import TiedSAE
from lmscope.methods.sae.arch.topk import TopKSAE
from lmscope.methods.sae.config import SaeConfig

CLASSES: dict[str, type[SparseAutoencoder]] = {c.name: c for c in (TiedSAE, ReluSAE, TopKSAE, BatchTopKSAE)}


def build_sae(cfg: SaeConfig, seed: int = 0) -> SparseAutoencoder:
    """A freshly initialised SAE of ``cfg.architecture``, seeded (torch's global generator is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLASSES[cfg.architecture](cfg)


__all__ = ["CLASSES", "BatchTopKSAE", "ForwardOutput", "ReluSAE", "SparseAutoencoder", "TiedSAE", "TopKSAE",
           "build_sae", "geometric_median"]
