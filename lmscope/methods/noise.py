"""The embedding scale that sets causal tracing's noise (ROME: 3 x the std of the subjects' embeddings).

Estimated once per model (keyed by :meth:`LM.fingerprint`) over the first tokens of a packaged corpus, at the
output of the embedding module (so Gemma's sqrt(d) scaling is included, as the noise is added there), and cached
as JSON in the lmscope cache.
"""

from __future__ import annotations

import logging

import torch

from lmscope.assets import cache_dir
from lmscope.io import ArtifactError, read_json, write_json
from lmscope.model.lm import LM
from lmscope.model.sites import Site

log = logging.getLogger(__name__)


def _measure(lm: LM, corpus: str, tokens: int) -> tuple[float, int]:
    from lmscope.data.corpus import iter_texts, token_batches

    embed = Site(0, "embed")
    total = total_sq = 0.0
    count = 0
    for batch in token_batches(lm.tokenizer, iter_texts(corpus), seq_len=128, batch_size=16, max_tokens=tokens):
        _, cache = lm.run_with_cache(batch.to(lm.device), [embed], stop_after=embed)
        x = cache[embed].double()  # (batch, pos, d)
        total, total_sq, count = total + float(x.sum()), total_sq + float((x * x).sum()), count + x.numel()
    if count == 0:
        raise ArtifactError(f"corpus {corpus!r} gave no tokens to estimate the embedding std")
    mean = total / count
    return (total_sq / count - mean * mean) ** 0.5, count // lm.d_model


def embedding_std(lm: LM, corpus: str = "wiki", tokens: int = 20_000) -> float:
    """Std of all coordinates of the token embeddings over ``tokens`` corpus tokens; cached per model."""
    path = cache_dir() / "stats" / f"{lm.name.replace('/', '--')}-{lm.fingerprint()}" / "embedding_std.json"
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
