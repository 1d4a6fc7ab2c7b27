"""Sparse-autoencoder architectures, one module each behind :class:`.base.SparseAutoencoder`.

``base`` (the interface: encode, decode, loss, the features as Units), ``l1`` (what the L1 variants share) and
``sparse`` (their sparse training kernels), then one module per architecture: ``tied`` (the paper's tied ReLU), ``relu``
(untied, decoder-norm-weighted L1), ``topk`` (TopK + AuxK), ``batchtopk`` (BatchTopK), ``jumprelu`` (JumpReLU),
``matryoshka`` (Matryoshka BatchTopK), ``gated`` (Gated SAE).
"""

import torch

from lmscope.methods.sae.arch.base import ForwardOutput, SparseAutoencoder, geometric_median
from lmscope.methods.sae.arch.batchtopk import BatchTopKSAE
from lmscope.methods.sae.arch.gated import GatedSAE
from lmscope.methods.sae.arch.jumprelu import JumpReLUSAE
from lmscope.methods.sae.arch.matryoshka import MatryoshkaSAE
from lmscope.methods.sae.arch.relu import ReluSAE
from lmscope.methods.sae.arch.tied import TiedSAE
from lmscope.methods.sae.arch.topk import TopKSAE
from lmscope.methods.sae.config import SaeConfig
from lmscope.methods.sae.registry import sae_class

CLASSES: dict[str, type[SparseAutoencoder]] = {c.name: c for c in (TiedSAE, ReluSAE, TopKSAE, BatchTopKSAE,
                                                                    JumpReLUSAE, MatryoshkaSAE, GatedSAE)}


def build_sae(cfg: SaeConfig, seed: int = 0) -> SparseAutoencoder:
    """A freshly initialised SAE of ``cfg.architecture`` (any registered one), seeded (torch's own is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return sae_class(cfg.architecture)(cfg)


__all__ = ["CLASSES", "BatchTopKSAE", "ForwardOutput", "GatedSAE", "JumpReLUSAE", "MatryoshkaSAE", "ReluSAE",
           "SparseAutoencoder", "TiedSAE", "TopKSAE", "build_sae", "geometric_median"]
