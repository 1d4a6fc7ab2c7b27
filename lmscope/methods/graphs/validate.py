"""The intervention check: remove a graph's top features from the real model, compare with the graph's prediction.

For feature s at (layer l, position p) with activation a_s, zeroing it subtracts ``a_s D_s`` from the MLP output at
(l, p). The graph predicts the change of each target logit (demeaned) two ways: its direct edge (``-A[logit, s]``,
everything downstream held) and the total effect through the graph (a change of a downstream feature's
pre-activation moves its activation by as much: ``-(I + P + P^2 + ...) A[:, s]`` with ``P[u, t] = A[u, t] / a_t``
for feature columns). The real model then runs unfrozen (attention, norms and every later MLP recomputed, so the
error terms are too) with the subtraction hooked in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmscope.methods.graphs.replacement import PromptState, replacement, setup
from lmscope.methods.graphs.result import AttributionGraph
from lmscope.methods.graphs.transcoders import LayerTranscoder
from lmscope.model.hooks import add
from lmscope.model.lm import LM
from lmscope.model.sites import Site


@dataclass
class Intervention:
    """One feature removed: the graph's predictions and the real model's change of the top logit (demeaned)."""

    node: str
    direct: float
    total: float
    measured: float


def total_effects(graph: AttributionGraph, source: int) -> torch.Tensor:
    """(N,) the change of every node's input when ``source`` is removed, through the linear graph."""
    a = graph.adjacency
    n_feat = graph.n_feat
    p = torch.zeros_like(a)
    live = graph.activations > 1e-6  # a ReLU / TopK / JumpReLU feature above zero passes a change on one to one
    p[:, :n_feat][:, live] = a[:, :n_feat][:, live] / graph.activations[live][None]
    delta = -a[:, source].clone()
    total = delta.clone()
    for _ in range(graph.n_layers + 2):  # a path crosses each layer at most once
        delta = p @ delta
        if not bool(delta.abs().gt(0).any()):
            break
        total += delta
    return total


def _demeaned_top(lm: LM, graph: AttributionGraph, *ops, state: PromptState | None = None) -> float:
    """The top target's demeaned logit in the real model (or, given ``state``, its linearised replacement)."""
    ids = graph.input_ids[None].to(lm.device)
    with torch.no_grad(), (lm.hooks(*ops) if state is None else replacement(lm, state, *ops)):
        logits = lm.model(input_ids=ids, use_cache=False).logits[0, -1].float()
    return float(logits[graph.logit_ids[0]] - logits.mean())


def intervene(lm: LM, graph: AttributionGraph, transcoders: dict[int, LayerTranscoder], top: int = 10,
              linearised: bool = False) -> list[Intervention]:
    """Remove each of the ``top`` most influential kept features in turn, in the real model.

    ``linearised``: in the replacement model instead (frozen attention and norms, later MLP outputs held), where
    the measured change must be the direct edge: a check of the graph itself.
    """
    state = setup(lm, graph.input_ids[None], transcoders, graph.config.zero_first) if linearised else None
    kept = graph.pruned()
    feats = [i for i in torch.nonzero(kept.nodes).view(-1).tolist() if graph.kind(i) == "feature"]
    feats.sort(key=lambda i: float(kept.cumulative[i]))
    logit_row = graph.adjacency.shape[0] - len(graph.logit_ids)
    base = _demeaned_top(lm, graph, state=state)
    out = []
    for i in feats[:top]:
        layer, pos, feat = graph.features[i].tolist()
        vector = graph.activations[i] * transcoders[layer].decoder[feat]
        moved = _demeaned_top(lm, graph, add(Site(layer, "mlp_out"), -vector.to(lm.dtype), positions=[pos]),
                              state=state)
        out.append(Intervention(graph.label(i), -float(graph.adjacency[logit_row, i]),
                                float(total_effects(graph, i)[logit_row]), moved - base))
    return out
