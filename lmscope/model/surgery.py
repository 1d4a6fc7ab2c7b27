"""Reversible model surgery on whole blocks.

Skip (delete) blocks, swap two blocks, or start the forward pass from a given residual stream after some block.
Every change is a context manager that restores the original
modules in ``finally``; the model's own forward loop runs unchanged (no architecture is re-implemented).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager

import torch
from torch import nn

from lmscope.errors import ConfigError, SiteError
from lmscope.model.lm import LM, probed
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


@probed
def block_output_is_tuple(lm: LM) -> bool:
    """Whether this model's blocks return a tuple (older transformers) or a tensor; probed once per model."""
    seen = []
    handle = lm.layout.blocks[0].register_forward_hook(lambda m, i, o: seen.append(isinstance(o, tuple)))
    try:
        with torch.no_grad():
            lm.model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=lm.device), use_cache=False)
    finally:
        handle.remove()
    return seen[0]


@contextmanager
def replaced_blocks(lm: LM, modules: Mapping[int, nn.Module]) -> Iterator[None]:
    """Put ``modules[l]`` in place of block ``l`` for the duration of the context (always restored)."""
    container = lm.block_list()
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


@contextmanager
def swap_blocks(lm: LM, layer: int) -> Iterator[None]:
    """Run block ``layer + 1`` before block ``layer``, each with its own weights and its own attention type.

    Where the model picks a block's mask and rotary embedding by its slot (``config.layer_types``, e.g. Gemma 3's
    sliding and full attention), the two entries are swapped too, so a moved block keeps its own (always restored).
    """
    first = lm.check(Site(layer, "resid_post")).layer
    if first == lm.n_layers - 1:
        raise SiteError(f"cannot swap block {layer}: it is the last block; swaps take a layer in 0..{lm.n_layers - 2} "
                        f"(block l runs after block l + 1)")
    second = first + 1
    types = getattr(lm.config, "layer_types", None)
    original = list(types) if isinstance(types, list) and len(types) > second else None
    try:
        if original is not None:
            types[first], types[second] = original[second], original[first]
        with replaced_blocks(lm, {first: lm.layout.blocks[second], second: lm.layout.blocks[first]}):
            yield
    finally:
        if original is not None:
            types[:] = original


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


class RowStart(nn.Module):
    """Stands in for block ``layer`` when rows start at different blocks (see :func:`staggered_start`).

    The block runs on the first ``n_active`` rows only (those that started below it); the others pass through.
    Rows ``[lo, hi)`` then take ``value`` as this block's output: they start here.
    """

    def __init__(self, block: nn.Module, as_tuple: bool, n_active: int, lo: int, hi: int,
                 value: torch.Tensor | None):
        super().__init__()
        self.block, self.as_tuple, self.n_active = block, as_tuple, n_active
        self.lo, self.hi, self.value = lo, hi, value  # value: (hi - lo, pos, d_model)
        for name in ("attention_type", "layer_idx", "is_sliding", "sliding_window"):
            if hasattr(block, name):
                object.__setattr__(self, name, getattr(block, name))

    def forward(self, *args, **kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        rows, n = hidden.shape[0], self.n_active
        out = hidden
        if n > 0:
            sub = self.block(hidden[:n], *(_rows(v, rows, n) for v in args[1:]),
                             **{k: _rows(v, rows, n) for k, v in kwargs.items()})
            sub = sub[0] if isinstance(sub, tuple) else sub
            out = sub if n == rows else torch.cat([sub, hidden[n:]])
        if self.hi > self.lo:
            out = out.clone() if out is hidden else out
            out[self.lo:self.hi] = self.value.to(out.dtype)
        return (out,) if self.as_tuple else out


def _rows(value, rows: int, n: int):
    """The first n rows of a batched block input (masks, position ids / embeddings: >= 2-dim tensors or tuples).

    Anything else (caches, flags, 1-dim cache positions) is passed as is.
    """
    if isinstance(value, tuple):
        return tuple(_rows(v, rows, n) for v in value)
    if isinstance(value, torch.Tensor) and value.dim() >= 2 and value.shape[0] == rows and rows > 1:
        return value[:n]
    return value


def staggered_start(lm: LM, starts: list[int], resid: torch.Tensor) -> AbstractContextManager[None]:
    """Row ``r`` begins with ``resid[r]`` as the output of block ``starts[r]`` (-1: it runs from the embeddings).

    ``starts``: non-decreasing over the batch rows, so that the rows a block runs on are always the first ones;
    each block runs only on the rows that started below it, and hooks inside it see that leading sub-batch.
    ``resid``: (batch, pos, d_model); rows starting at -1 are not read. A KV cache passed to the model must hold,
    at layer ``l``, the rows that run block ``l`` (the first ``sum(s < l for s in starts)``).
    """
    if any(b < a for a, b in zip(starts, starts[1:])):
        raise ConfigError("staggered_start: starts must be sorted (non-decreasing over the batch)")
    tup = block_output_is_tuple(lm)
    stubs = {}
    for layer in range(lm.n_layers):
        n_active = bisect.bisect_left(starts, layer)  # starts are sorted: the rows that started below
        lo, hi = n_active, bisect.bisect_right(starts, layer)
        if n_active < len(starts) or hi > lo:
            value = resid[lo:hi] if hi > lo else None
            stubs[layer] = RowStart(lm.layout.blocks[layer], tup, n_active, lo, hi, value)
    return replaced_blocks(lm, stubs)
