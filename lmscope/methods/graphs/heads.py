"""Head loadings: which attention heads carry each kept edge (circuit-tracer has none; users ask for them).

The replacement model is linear, so removing one head's output (its slice of the attention output projection's
input, in the frozen model) removes exactly the paths through that head. The loading of head (l, h) on the edge
s -> t is the part of the edge that disappears: ``A[t, s] - A_without(l, h)[t, s]``. Paths through several heads
count for each of them, so loadings need not add up to the edge; the part carried by no head (the residual path at
the same position) is the edge minus the sum when no path uses two heads. One row per (target, head): the cost is
``targets x heads / batch_size`` backward passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmscope.methods.graphs.attribute import Attributor, feature_targets, logit_targets
from lmscope.methods.graphs.replacement import setup
from lmscope.methods.graphs.result import AttributionGraph
from lmscope.methods.graphs.transcoders import LayerTranscoder
from lmscope.model.hooks import apply
from lmscope.model.lm import LM
from lmscope.model.sites import Site


@dataclass
class EdgeHeads:
    """One kept edge and the heads that carry it most: (layer, head, loading) by |loading|."""

    source: str
    target: str
    weight: float
    heads: list[tuple[int, int, float]]

    def as_dict(self) -> dict:
        """JSON form."""
        return {"source": self.source, "target": self.target, "weight": self.weight,
                "heads": [list(h) for h in self.heads]}


def _zero_head(head: int, d_head: int):
    def fn(x: torch.Tensor) -> torch.Tensor:  # (rows, pos, n_heads * d_head)
        x = x.clone()
        x[..., head * d_head:(head + 1) * d_head] = 0
        return x

    return fn


def head_loadings(lm: LM, graph: AttributionGraph, transcoders: dict[int, LayerTranscoder], top_edges: int = 20,
                  top_heads: int = 3) -> list[EdgeHeads]:
    """The ``top_heads`` heads carrying each of the ``top_edges`` strongest kept edges."""
    kept = graph.pruned()
    edges = [(int(t), int(s)) for t, s in kept.edges.nonzero().tolist()]
    edges.sort(key=lambda ts: -abs(float(graph.adjacency[ts])))
    edges = edges[:top_edges]
    state = setup(lm, graph.input_ids[None], transcoders, graph.config.zero_first)
    att = Attributor(lm, state, graph.config.batch_size)
    index = {tuple(f): i for i, f in enumerate(state.features.tolist())}  # (layer, pos, feature) -> prompt index
    targets = sorted({t for t, _ in edges})
    heads = [(layer, h) for layer in range(lm.n_layers) for h in range(lm.n_heads)]
    vectors = logit_targets(lm, state.logits, graph.config, graph.logit_ids.tolist()).vectors
    specs, rows = [], []
    for t in targets:
        spec = _target_spec(graph, state, index, vectors, t)
        for layer, h in heads:
            if spec[0] < 0 or layer <= spec[0]:  # a head can carry a path only below the target's MLP
                specs.append((t, layer, h))
                rows.append(spec)
    d_head = lm.d_head

    def row_ops(i: int, k: int):
        _, layer, h = specs[k]
        return [apply(Site(layer, "attn_heads"), _zero_head(h, d_head), rows=[i])]

    without = att.rows(rows, row_ops)  # (len(specs), n_sources)
    columns = _graph_columns(graph, att, index)
    by_target: dict[int, list[tuple[int, int, int]]] = {}  # target -> (row of ``without``, layer, head)
    for k, (t, layer, h) in enumerate(specs):
        by_target.setdefault(t, []).append((k, layer, h))
    out = []
    for t, s in edges:
        col = int(columns[s])
        found = [(layer, h, float(graph.adjacency[t, s]) - float(without[k, col])) for k, layer, h in by_target[t]]
        found.sort(key=lambda x: -abs(x[2]))
        out.append(EdgeHeads(graph.label(s), graph.label(t), float(graph.adjacency[t, s]),
                             [(layer, h, round(v, 6)) for layer, h, v in found[:top_heads]]))
    return out


def _target_spec(graph: AttributionGraph, state, index: dict, vectors: torch.Tensor, t: int):
    """(layer or -1, position, w_t) of graph node ``t``."""
    if graph.kind(t) == "logit":
        return (-1, graph.n_pos - 1, vectors[graph.logit_index(t)])
    return feature_targets(state, torch.tensor([index[tuple(graph.features[t].tolist())]]))[0]


def _graph_columns(graph: AttributionGraph, att: Attributor, index: dict) -> torch.Tensor:
    """For every graph node, its column among the attributor's sources (features of the prompt, errors, tokens)."""
    cols = torch.full((graph.adjacency.shape[0],), -1, dtype=torch.long)
    for i in range(graph.n_feat):
        cols[i] = index[tuple(graph.features[i].tolist())]
    fixed = graph.n_errors + graph.n_pos
    cols[graph.n_feat:graph.n_feat + fixed] = torch.arange(att.n_feat, att.n_feat + fixed)
    return cols
