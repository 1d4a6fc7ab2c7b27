"""Influence, pruning and the graph scores, as circuit-tracer computes them.

(circuit-tracer's ``graph.py``: ``prune_graph``, ``compute_graph_scores``.)

Rows of the adjacency are normalised by their absolute sum (a target's incoming weights sum to 1); the influence of
every node on the logits is ``w (A + A^2 + ...)`` with the logit probabilities as ``w``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def normalize(adjacency: torch.Tensor) -> torch.Tensor:
    """|A| with every row summing to 1 (rows with no input stay 0)."""
    a = adjacency.abs()
    return a / a.sum(1, keepdim=True).clamp_min(1e-10)


def influence(a: torch.Tensor, weights: torch.Tensor, max_iter: int = 1000) -> torch.Tensor:
    """``w (A + A^2 + ...)``: the graph is acyclic, so the series ends."""
    current = weights @ a
    total = current.clone()
    for _ in range(max_iter):
        if not bool(current.any()):
            return total
        current = current @ a
        total += current
    raise RuntimeError("influence did not converge: the adjacency has a cycle")


def logit_weights(n: int, probs: torch.Tensor) -> torch.Tensor:
    """(n,) zeros with the logit probabilities in the last places."""
    w = torch.zeros(n)
    w[n - len(probs):] = probs
    return w


def threshold(scores: torch.Tensor, fraction: float) -> float:
    """The smallest score among the top ones that carry ``fraction`` of the total (ties kept)."""
    s = scores.flatten().sort(descending=True).values
    cum = s.cumsum(0) / s.sum().clamp_min(1e-30)
    i = min(int(torch.searchsorted(cum, torch.tensor(fraction))), len(s) - 1)
    return float(s[i])


@dataclass
class Pruned:
    """Kept nodes and edges, and each node's cumulative influence fraction at its rank (small: important)."""

    nodes: torch.Tensor  # (N,) bool
    edges: torch.Tensor  # (N, N) bool, [target, source]
    cumulative: torch.Tensor  # (N,)


def prune(adjacency: torch.Tensor, probs: torch.Tensor, n_feat: int, n_tokens: int, node_threshold: float = 0.8,
          edge_threshold: float = 0.98) -> Pruned:
    """circuit-tracer's ``prune_graph``: nodes by influence, then edges, then nodes left dangling, until stable."""
    n, n_logits = adjacency.shape[0], len(probs)
    w = logit_weights(n, probs)
    node_infl = influence(normalize(adjacency), w)
    nodes = node_infl >= threshold(node_infl, node_threshold)
    nodes[n - n_logits - n_tokens:] = True  # tokens and logits are always kept
    kept = adjacency.clone()
    kept[~nodes] = 0
    kept[:, ~nodes] = 0
    a = normalize(kept)
    scores = a * (influence(a, w) + w)[:, None]
    edges = scores >= threshold(scores, edge_threshold)
    fixed = n - n_logits - n_tokens
    while True:
        before = nodes.clone()
        nodes[:fixed] &= edges[:, :fixed].any(0)  # features and errors need a kept outgoing edge
        nodes[:n_feat] &= edges[:n_feat].any(1)  # features need a kept incoming edge
        edges &= nodes[:, None] & nodes[None, :]
        if torch.equal(before, nodes):
            break
    order = node_infl.argsort(descending=True)
    cumulative = torch.empty(n)
    cumulative[order] = node_infl[order].cumsum(0) / node_infl.sum().clamp_min(1e-30)
    return Pruned(nodes, edges, cumulative)


def scores(adjacency: torch.Tensor, probs: torch.Tensor, n_feat: int, n_errors: int, n_tokens: int) -> dict:
    """circuit-tracer's replacement and completeness scores (of the unpruned graph).

    replacement: the tokens' share of the influence that reaches the logits from tokens and errors;
    completeness: the incoming weight not from errors, averaged over nodes by their influence (+ logit weight).
    """
    n = adjacency.shape[0]
    w = logit_weights(n, probs)
    a = normalize(adjacency)
    infl = influence(a, w)
    err = slice(n_feat, n_feat + n_errors)
    tok = slice(err.stop, err.stop + n_tokens)
    replacement = float(infl[tok].sum() / (infl[tok].sum() + infl[err].sum()).clamp_min(1e-30))
    non_error = 1 - a[:, err].sum(-1)
    out = infl + w
    completeness = float((non_error * out).sum() / out.sum().clamp_min(1e-30))
    return {"replacement": replacement, "completeness": completeness}
