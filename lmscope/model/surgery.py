"""Reversible model surgery on whole blocks.

Skip (delete) blocks, swap two blocks, or start the forward pass from a given residual stream after some block.
Every change is a context manager that restores the original
modules in ``finally``; the model's own forward loop runs unchanged (no architecture is re-implemented).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager

import torch
from torch import nn

from lmscope.model.lm import LM, _get
from lmscope.model.sites import Site

log = logging.getLogger(__name__)


class PassThrough(nn.Module):
    """Stands in for a block: returns its input residual (or a fixed ``value``) in the block's output format."""

    def __init__(self, original: nn.Module, as_tuple: bool, value: torch.Tensor | None = None):
        super().__init__()
        self.as_tuple = as_tuple
        self.value = value  # (batch, pos, d_model) returned instead of the input, if given
        # Attributes a model's forward loop may read from its blocks (e.g. attention_type, layer_idx).
        for name in ("attention_type", "layer_idx", "is_sliding", "sliding_window"):
            if hasattr(original, name):
                object.__setattr__(self, name, getattr(original, name))

    def forward(self, *args, **kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        out = hidden if self.value is None else self.value.to(hidden.dtype)
        return (out,) if self.as_tuple else out


def block_output_is_tuple(lm: LM) -> bool:
    """Whether this model's blocks return a tuple (older transformers) or a tensor; probed once and cached."""
    if not hasattr(lm, "_block_tuple"):
        seen = []
        handle = lm.layout.blocks[0].register_forward_hook(lambda m, i, o: seen.append(isinstance(o, tuple)))
        try:
            with torch.no_grad():
                lm.model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=lm.device), use_cache=False)
        finally:
            handle.remove()
        lm._block_tuple = seen[0]
    return lm._block_tuple


@contextmanager
def replaced_blocks(lm: LM, modules: Mapping[int, nn.Module]) -> Iterator[None]:
    """Put ``modules[l]`` in place of block ``l`` for the duration of the context (always restored)."""
    container = _get(lm.model, lm.layout.spec.blocks, lm.layout.spec, "blocks")
    for layer in modules:
        lm.check(Site(layer, "resid_post"))
    originals = {layer: container[layer] for layer in modules}
    try:
        for layer, module in modules.items():
            container[layer] = module
        yield
    finally:
        for layer, module in originals.items():
            container[layer] = module


def delete_blocks(lm: LM, layers) -> AbstractContextManager[None]:
    """Skip the given blocks: the residual stream passes through them unchanged."""
    tup = block_output_is_tuple(lm)
    layers = [layers] if isinstance(layers, int) else list(layers)
    layers = [lm.check(Site(layer, "resid_post")).layer for layer in layers]
    return replaced_blocks(lm, {layer: PassThrough(lm.layout.blocks[layer], tup) for layer in layers})


def swap_blocks(lm: LM, layer: int) -> AbstractContextManager[None]:
    """Run block ``layer + 1`` before block ``layer`` (each keeps its own weights and attention type)."""
    first, second = lm.check(Site(layer, "resid_post")).layer, lm.check(Site(layer + 1, "resid_post")).layer
    return replaced_blocks(lm, {first: lm.layout.blocks[second], second: lm.layout.blocks[first]})


def start_after(lm: LM, layer: int, resid: torch.Tensor) -> AbstractContextManager[None]:
    """Begin the forward pass with ``resid`` as the output of block ``layer``: blocks 0..layer are not run.

    ``resid``: (batch, pos, d_model), the batch and positions of the input ids the model is called with (their
    embeddings are computed but unused). Blocks above ``layer`` run as usual, with the model's own masks and
    position embeddings, so hooks on them work as in a full pass.
    """
    layer = lm.check(Site(layer, "resid_post")).layer
    tup = block_output_is_tuple(lm)
    stubs = {below: PassThrough(lm.layout.blocks[below], tup) for below in range(layer)}
    stubs[layer] = PassThrough(lm.layout.blocks[layer], tup, value=resid)
    return replaced_blocks(lm, stubs)
