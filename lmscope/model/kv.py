"""The model's own KV cache (keys and values of earlier tokens) across transformers versions.

Whether it can be reused per row, how to pass it, where a forward pass returns it, a forward pass that unembeds
only the last position, and a head of tokens many prompts share, run once (:class:`SharedHead`). ("KV cache" here;
captured activations are an ``ActivationCache``; files on disk are the store, :mod:`lmscope.store`.)
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Sequence

import torch

from lmscope.model.hooks import capture
from lmscope.model.lm import LM, probed
from lmscope.model.sites import Site
from lmscope.model.tokens import pad

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


def _chunks(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Row indices in runs of about ``batch_tokens`` padded tokens (rows in their order; at least one a run)."""
    chunks, current, width = [], [], 0
    for i, n in enumerate(lengths):
        if current and max(width, n) * (len(current) + 1) > batch_tokens:
            chunks.append(current)
            current, width = [], 0
        current.append(i)
        width = max(width, n)
    return chunks + [current] if current else chunks


class SharedHead:
    """Tokens that many prefixes begin with (a prompt's fixed instructions): their KV cache is computed once.

    Its owner (a method's backend, never the model wrapper) keeps it while the model's weights stay as they are.
    """

    def __init__(self, ids: Sequence[int]):
        self.ids, self.cache = list(ids), None

    def covers(self, prefix: Sequence[int]) -> bool:
        """Whether ``prefix`` begins with these tokens."""
        return bool(self.ids) and list(prefix[: len(self.ids)]) == self.ids

    @torch.no_grad()
    def cache_for(self, lm: LM, prefix: Sequence[int]):
        """The KV cache of ``prefix`` (which it covers): the head's, computed once, extended by the rest."""
        if self.cache is None:
            self.cache = returned_cache(last_logits(lm, torch.tensor([self.ids], device=lm.device), use_cache=True))
        rest = list(prefix[len(self.ids):])
        if not rest:
            return self.cache  # the callers copy it before they extend it
        kv = copy.deepcopy(self.cache)
        return returned_cache(last_logits(lm, torch.tensor([rest], device=lm.device), **cache_kwargs(lm, kv)))


@torch.no_grad()
def continuation_logits(lm: LM, prefix: Sequence[int], rows: Sequence[Sequence[int]],
                        positions: Sequence[Sequence[int]], batch_tokens: int = 2048,
                        head: SharedHead | None = None) -> list[torch.Tensor]:
    """The logits at ``positions[i]`` (indices into ``rows[i]``) of each row read after one shared ``prefix``.

    Returns one (len(positions[i]), vocab) float tensor a row, equal to the logits of the whole sequence
    prefix + row at those places. The prefix runs once and every row reuses its KV cache (when the model's cache
    can be reused; else each row runs with the prefix); rows run right-padded (causal: no real token sees a pad) in
    batches of about ``batch_tokens`` tokens, the forward stops after the last block and only the positions asked
    are unembedded. ``head``: tokens the prefix may begin with, whose KV cache is kept across calls.
    """
    if not rows:
        return []
    last = Site(lm.n_layers - 1, "resid_post")
    reuse = bool(prefix) and supports_prefix(lm)
    lm.check_length(len(prefix) + max(len(r) for r in rows))
    cache = None
    if reuse and head is not None and head.covers(prefix):
        cache = head.cache_for(lm, prefix)
    elif reuse:
        cache = returned_cache(last_logits(lm, torch.tensor([list(prefix)], device=lm.device), use_cache=True))
    seqs = [list(r) if reuse else [*prefix, *r] for r in rows]
    offset = 0 if reuse else len(prefix)
    out: list[torch.Tensor] = [torch.empty(0)] * len(rows)
    for chunk in _chunks([len(s) for s in seqs], batch_tokens):
        ids, _ = pad([seqs[i] for i in chunk], lm.device)  # (chunk, width)
        kwargs = {"use_cache": False}
        if reuse:
            kv = copy.deepcopy(cache)
            for layer in kv.layers:
                layer.batch_select_indices(torch.zeros(len(chunk), dtype=torch.long, device=lm.device))
            kwargs = cache_kwargs(lm, kv)
        with lm.hooks(capture(last), stop_after=last) as acts:
            lm.model(input_ids=ids, **kwargs)
        for j, i in enumerate(chunk):
            at = torch.as_tensor(list(positions[i]), dtype=torch.long, device=lm.device) + offset
            out[i] = lm.unembed(acts[last][j, at]).float()  # (k, vocab)
    return out
