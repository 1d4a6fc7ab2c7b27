"""Neuron scores for a batch of prompts and one target token each: forward contribution and gradient x activation.

Both read the MLP key (the input of W_out, ``mlp_key``) of every scored layer; the contribution needs only the
target's row of W_U, so no (vocab x d_mlp) projection is ever built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lmscope.model.hooks import capture, gradient_taps
from lmscope.model.lm import LM
from lmscope.model.sites import Site


@dataclass
class Scored:
    """What one scoring pass gives for a batch: scores and the activations they came from."""

    contribution: torch.Tensor | None  # (batch, n_layers, d_mlp)
    gradxact: torch.Tensor | None  # (batch, n_layers, d_mlp)
    keys: torch.Tensor  # (batch, n_layers, pos, d_mlp) MLP keys at every position (float32)
    logits: torch.Tensor  # (batch, vocab) at the scored position
    targets: torch.Tensor  # (batch,) the scored tokens (OWN entries resolved to the model's top token)


OWN = -1  # a target id meaning "the model's own next token", resolved from the scoring pass's own logits


def _own(targets: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``targets`` with every :data:`OWN` entry replaced by the argmax of ``logits`` (batch, vocab)."""
    targets = targets.to(logits.device)
    return torch.where(targets == OWN, logits.argmax(-1), targets)


def last_positions(mask: torch.Tensor) -> torch.Tensor:
    """(batch,) index of each row's last real token in a right-padded batch."""
    return mask.long().sum(1) - 1


@torch.no_grad()
def contribution_from_keys(lm: LM, layers: Sequence[int], keys: torch.Tensor, targets: torch.Tensor,
                           positions: torch.Tensor) -> torch.Tensor:
    """Forward contribution s[b, l, i] = O_i^l(b, p_b) (W_U W_out^l)[t_b, i]: (batch, n_layers, d_mlp).

    ``keys``: (batch, n_layers, pos, d_mlp); ``targets`` t_b and ``positions`` p_b: (batch,).
    """
    rows = torch.arange(keys.shape[0], device=keys.device)
    o = keys[rows, :, positions.to(keys.device)]  # (batch, n_layers, d_mlp)
    u = lm.W_U[targets.to(lm.device)].float()  # (batch, d_model)
    coeff = torch.stack([u @ lm.W_out(layer).float() for layer in layers], 1)  # (batch, n_layers, d_mlp)
    return o * coeff.to(o.device)


def score_batch(lm: LM, inputs: dict[str, torch.Tensor], targets: torch.Tensor, layers: Sequence[int],
                method: str = "both", grad_site: str = "mlp_key",
                grad_positions: str | torch.Tensor = "last") -> Scored:
    """Score every neuron of ``layers`` for each row's ``targets`` (batch,) at its last real position.

    A target :data:`OWN` is the model's own next token, read from this pass's logits (no extra forward).

    ``method``: "contribution" runs one forward pass without gradients; "gradxact" and "both" one forward and one
    backward pass. ``grad_positions``: "last", "all" (every real position of the row) or a (batch, pos) mask (e.g.
    the image tokens, Schwettmann et al.'s patches).
    """
    mask = inputs.get("attention_mask", torch.ones_like(inputs["input_ids"]))
    last = last_positions(mask)
    key_sites = [Site(layer, "mlp_key") for layer in layers]
    rows = torch.arange(mask.shape[0], device=mask.device)
    if method == "contribution":
        logits, cache = lm.run_with_cache(inputs, key_sites)
        keys = torch.stack([cache[s].float() for s in key_sites], 1)
        targets = _own(targets, logits[rows, last])
        return Scored(contribution_from_keys(lm, layers, keys, targets, last), None, keys,
                      logits[rows, last].float(), targets.cpu())
    grad_sites = [Site(layer, grad_site) for layer in layers]
    store: dict[Site, tuple[torch.Tensor, torch.Tensor]] = {}
    extra = [capture(s) for s in key_sites] if grad_site != "mlp_key" else []
    with torch.enable_grad(), lm.hooks(*gradient_taps(grad_sites, store), *extra) as cache:
        logits = lm(inputs)
        targets = _own(targets, logits.detach()[rows, last])
        picked = logits[rows, last, targets]  # (batch,) rows are independent
        grads = torch.autograd.grad(picked.sum(), [store[s][1] for s in grad_sites])
    acts = torch.stack([store[s][0].float() for s in grad_sites], 1)  # (batch, n_layers, pos, d_mlp)
    where = _position_mask(mask, last, grad_positions).to(acts.dtype)  # (batch, pos)
    gxa = (acts * torch.stack(grads, 1).float() * where[:, None, :, None]).sum(2)
    keys = acts if grad_site == "mlp_key" else torch.stack([cache[s].float() for s in key_sites], 1)
    contrib = contribution_from_keys(lm, layers, keys, targets, last) if method == "both" else None
    return Scored(contrib, gxa, keys, logits.detach()[rows, last].float(), targets.cpu())


def _position_mask(mask: torch.Tensor, last: torch.Tensor, which: str | torch.Tensor) -> torch.Tensor:
    """(batch, pos) bool: the positions gradient x activation sums over ("last", "all" or a given mask)."""
    if isinstance(which, torch.Tensor):
        return which.bool().to(mask.device)
    if which == "all":
        return mask.bool()
    out = torch.zeros_like(mask, dtype=torch.bool)
    out[torch.arange(mask.shape[0]), last] = True
    return out


def vocab_projection(lm: LM, layer: int, neuron: int, k: int = 10) -> tuple[list[str], list[str]]:
    """(top, bottom) ``k`` tokens of W_U w_out_i: what neuron ``neuron`` of ``layer`` writes toward and against."""
    return vocab_projections(lm, [(layer, neuron)], k)[(layer, neuron)]


@torch.no_grad()
def vocab_projections(lm: LM, neurons: Sequence[tuple[int, int]], k: int = 10,
                      chunk: int = 256) -> dict[tuple[int, int], tuple[list[str], list[str]]]:
    """:func:`vocab_projection` of many neurons, reading W_U once per ``chunk`` of them.

    One matmul instead of a matrix-vector product per neuron: W_U is the largest matrix of a small model.
    """
    unique = list(dict.fromkeys((int(a), int(b)) for a, b in neurons))
    out = {}
    for start in range(0, len(unique), chunk):
        part = unique[start:start + chunk]
        cols = torch.stack([lm.W_out(layer)[:, neuron].float() for layer, neuron in part], 1)  # (d_model, n)
        directions = lm.W_U.float() @ cols  # (vocab, n)
        top, bottom = directions.topk(k, 0).indices.T, (-directions).topk(k, 0).indices.T  # (n, k)
        for key, t, b in zip(part, top.tolist(), bottom.tolist()):
            out[key] = (lm.to_str_tokens(t), lm.to_str_tokens(b))
    return out


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two flat score vectors (ties broken by position)."""
    ra = a.flatten().argsort().argsort().double()
    rb = b.flatten().argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra @ rb) / (ra.norm() * rb.norm()).clamp_min(1e-12))
