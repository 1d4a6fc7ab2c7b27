"""Attribution graphs (Ameisen et al. 2025; circuit-tracer): which transcoder features compute a next-token logit.

Modules, lowest first: ``config`` (GraphConfig, circuit-tracer's defaults), ``transcoders`` (a layer's transcoder in
the model's units; the exact MLP as one), ``replacement`` (the local replacement model on the hook core),
``attribute`` (targets, batched backward passes, the adjacency), ``prune`` (influence, pruning, the replacement and
completeness scores), ``result`` (AttributionGraph, circuit-tracer's graph JSON), ``heads`` (the attention heads that
carry each kept edge), ``validate`` (removing top features from the real model against the graph's prediction;
clamping features), ``evaluate`` (the transcoders as a replacement model: per-layer FVE, CE recovered), ``graph``
(:func:`attribution_graph`, the public entry).
"""

from lmscope.methods.graphs.config import GraphConfig
from lmscope.methods.graphs.evaluate import ReplacementEval, ReplacementEvalConfig, evaluate_replacement
from lmscope.methods.graphs.graph import attribution_graph
from lmscope.methods.graphs.heads import EdgeHeads, head_loadings
from lmscope.methods.graphs.prune import Pruned, prune, scores
from lmscope.methods.graphs.result import AttributionGraph
from lmscope.methods.graphs.transcoders import LayerTranscoder, exact_mlp, from_coder
from lmscope.methods.graphs.validate import Clamp, Intervention, InterventionCheck, check_graph, clamp, intervene

__all__ = [
    "AttributionGraph", "Clamp", "EdgeHeads", "GraphConfig", "Intervention", "InterventionCheck", "LayerTranscoder",
    "Pruned", "ReplacementEval", "ReplacementEvalConfig", "attribution_graph", "check_graph", "clamp",
    "evaluate_replacement", "exact_mlp", "from_coder", "head_loadings", "intervene", "prune", "scores",
]
