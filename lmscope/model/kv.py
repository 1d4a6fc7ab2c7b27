"""The model's own KV cache (keys and values of earlier tokens) across transformers versions.

Whether it can be reused per row, how to pass it, where a forward pass returns it, and a forward pass that
unembeds only the last position. ("KV cache" here; captured activations are an ``ActivationCache``; files on
disk are the store, :mod:`lmscope.store`.)
"""

from __future__ import annotations

import copy
import inspect
import logging

import torch

from lmscope.model.lm import LM, probed

log = logging.getLogger(__name__)


@probed
def supports_prefix(lm: LM) -> bool:
    """Whether the model returns a KV cache that can be reordered per row (probed once per model)."""
    try:
        with torch.no_grad():
            out = lm.model(input_ids=torch.zeros(1, 2, dtype=torch.long, device=lm.device), use_cache=True)
        cache = copy.deepcopy(returned_cache(out))
        cache.layers[0].batch_select_indices(torch.zeros(2, dtype=torch.long, device=lm.device))
        return cache.get_seq_length() == 2 and len(cache.layers) == lm.n_layers
    except (AttributeError, TypeError, ValueError, RuntimeError, NotImplementedError) as err:
        log.info("%s: no reusable KV cache (%s); methods run whole prompts", lm.name, err)
        return False


def _accepts(model: torch.nn.Module, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


def cache_kwargs(lm: LM, cache) -> dict:
    """Keyword arguments passing a KV cache (``cache=`` in recent transformers, ``past_key_values=`` before)."""
    if cache is None:
        return {"use_cache": False}
    return {"cache" if _accepts(lm.model, "cache") else "past_key_values": cache, "use_cache": True}


def returned_cache(output):
    """The KV cache a forward pass returned (``.cache`` or ``.past_key_values``, by transformers version)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def last_logits(lm: LM, ids: torch.Tensor, **kwargs):
    """The model's output with logits at the last position only, when the model allows (else at all positions)."""
    if _accepts(lm.model, "logits_to_keep"):
        kwargs["logits_to_keep"] = 1
    return lm.model(input_ids=ids, **kwargs)
