"""The noise of causal tracing: its scale (ROME: 3 x the std of the embeddings) and its seeded draws.

The embedding std is estimated once per model (keyed by :meth:`LM.fingerprint`) over the first tokens of a
packaged corpus, at the output of the embedding module (so Gemma's sqrt(d) scaling is included, as the noise is
added there), and kept in the store.
"""

from __future__ import annotations

import logging

import torch

from lmscope import store
from lmscope.data.activations import CorpusConfig, activation_batches
from lmscope.errors import ArtifactError
from lmscope.io import read_json, write_json
from lmscope.methods.trace.config import TraceConfig
from lmscope.model.hooks import Op, add
from lmscope.model.lm import LM
from lmscope.model.sites import Site

log = logging.getLogger(__name__)


def _measure(lm: LM, corpus: str, tokens: int) -> tuple[float, int]:
    embed = Site(0, "embed")
    total = total_sq = 0.0
    count = 0
    text = CorpusConfig(corpus, "all", tokens, min(128, lm.context_length or 128), 16, drop_special=False,
                        drop_first=False, sink_factor=0.0)  # every embedding of every text
    for batch in activation_batches(lm, [embed], text, stop_after=embed):
        x = batch.acts[embed].double()  # (batch, pos, d)
        total, total_sq, count = total + float(x.sum()), total_sq + float((x * x).sum()), count + x.numel()
    if count == 0:
        raise ArtifactError(f"corpus {corpus!r} gave no tokens to estimate the embedding std")
    mean = total / count
    return (total_sq / count - mean * mean) ** 0.5, count // lm.d_model


def embedding_std(lm: LM, corpus: str = "wiki", tokens: int = 20_000) -> float:
    """Std of all coordinates of the token embeddings over ``tokens`` corpus tokens; cached per model."""
    path = store.embedding_std_file(lm.name, lm.fingerprint())
    key = {"corpus": corpus, "tokens": tokens}
    if path.is_file():
        try:
            saved = read_json(path)
            if all(saved.get(k) == v for k, v in key.items()) and isinstance(saved.get("std"), float):
                return saved["std"]
        except ArtifactError as err:
            log.warning("%s; estimating the embedding std again", err)
    log.info("estimating the embedding std of %s over %d tokens of %s (once)", lm.name, tokens, corpus)
    with torch.no_grad():
        std, n = _measure(lm, corpus, tokens)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {**key, "std": std, "tokens_seen": n, "model": lm.name})
    return std


def noise_scale(lm: LM, config: TraceConfig) -> float:
    """The configured noise, or noise_factor x the model's (cached) embedding std."""
    if config.noise is not None:
        return float(config.noise)
    return config.noise_factor * embedding_std(lm)


def draw_noise(config: TraceConfig, n_tokens: int, d_model: int, scale: float) -> torch.Tensor:
    """The seeded noise added to the subject embeddings: (samples, n_subject_tokens, d_model)."""
    gen = torch.Generator().manual_seed(config.noise_seed)
    shape = (config.samples, n_tokens, d_model)
    unit = torch.rand(shape, generator=gen) * 2 - 1 if config.uniform_noise else torch.randn(shape, generator=gen)
    return unit * scale


def noise_op(noise: torch.Tensor, span: tuple[int, int]) -> Op:
    """Add ``noise`` (rows, n_subject, d) to the embeddings of the subject tokens."""
    return add(Site(0, "embed"), noise, positions=slice(*span))
