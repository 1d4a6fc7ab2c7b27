"""Step 1 of ROME: the context prefixes, "{}" and short texts sampled from the model itself."""

from __future__ import annotations

from lmscope.methods.rome.config import RomeConfig
from lmscope.model.generate import sample_from_start
from lmscope.model.lm import LM


def context_prefixes(lm: LM, config: RomeConfig) -> list[str]:
    """ROME's context templates: "{}" and, per length, ``contexts_per_length`` sampled texts + ". {}".

    Sampling is seeded; compute them once and pass them to :func:`lmscope.rome_edit` when editing many facts.
    """
    texts = ["{}"]
    for i, length in enumerate(config.context_lengths):
        sampled = sample_from_start(lm, config.contexts_per_length, length - 1, config.context_seed + i)
        texts += [t.replace("{", " ").replace("}", " ") + ". {}" for t in sampled]
    return texts
