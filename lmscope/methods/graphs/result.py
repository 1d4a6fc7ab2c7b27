"""An attribution graph as a result (``cfg.json`` + safetensors, no pickle) and as circuit-tracer's graph JSON.

Nodes, in adjacency order: the explored features (``features`` rows: layer, position, feature), the error nodes
(layer-major), the tokens, the target logits. ``adjacency[t, s]`` is the direct effect of node s on node t.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmscope.io import Result
from lmscope.methods.graphs.config import GraphConfig
from lmscope.methods.graphs.prune import Pruned, prune


@dataclass
class AttributionGraph(Result):
    """The attribution graph of one prompt's next-token logits."""

    model: str
    prompt: str
    tokens: list[str]  # (pos,) the prompt's tokens as text
    input_ids: torch.Tensor  # (pos,)
    n_layers: int
    features: torch.Tensor  # (n_sel, 3) long: layer, position, feature of the explored features
    activations: torch.Tensor  # (n_sel,)
    adjacency: torch.Tensor  # (N, N) [target, source]
    logit_ids: torch.Tensor  # (k,)
    logit_probs: torch.Tensor  # (k,)
    logit_tokens: list[str]  # (k,)
    active_features: int  # every active feature of the prompt (explored or not)
    transcoders: str  # where the transcoders came from
    scores: dict = field(default_factory=dict)  # replacement, completeness
    cost: dict = field(default_factory=dict)  # the estimate, seconds, peak memory
    config: GraphConfig = field(default_factory=GraphConfig)
    heads: list = field(default_factory=list)  # head loadings of the strongest kept edges (heads.EdgeHeads dicts)

    @property
    def n_pos(self) -> int:
        """Prompt length."""
        return len(self.tokens)

    @property
    def n_feat(self) -> int:
        """Feature nodes."""
        return self.features.shape[0]

    @property
    def n_errors(self) -> int:
        """Error nodes (one per layer and position)."""
        return self.n_layers * self.n_pos

    def kind(self, node: int) -> str:
        """"feature", "error", "token" or "logit"."""
        if node < self.n_feat:
            return "feature"
        if node < self.n_feat + self.n_errors:
            return "error"
        return "token" if node < self.n_feat + self.n_errors + self.n_pos else "logit"

    def logit_index(self, node: int) -> int:
        """Which target logit a logit node is (0 = the most likely)."""
        return node - self.adjacency.shape[0] + len(self.logit_tokens)

    def where(self, node: int) -> tuple[int, int]:
        """(layer, position) of a node: tokens at layer -1, logits at n_layers and the last position."""
        kind = self.kind(node)
        if kind == "feature":
            layer, pos, _ = self.features[node].tolist()
            return layer, pos
        if kind == "error":
            return divmod(node - self.n_feat, self.n_pos)
        if kind == "token":
            return -1, node - self.n_feat - self.n_errors
        return self.n_layers, self.n_pos - 1

    def label(self, node: int) -> str:
        """A short name: L12.F345@3, err L4@2, tok 'Paris'@5, logit ' Paris'."""
        kind, (layer, pos) = self.kind(node), self.where(node)
        if kind == "feature":
            return f"L{layer}.F{int(self.features[node, 2])}@{pos}"
        if kind == "error":
            return f"err L{layer}@{pos}"
        if kind == "token":
            return f"tok {self.tokens[pos]!r}@{pos}"
        return f"logit {self.logit_tokens[self.logit_index(node)]!r}"

    def pruned(self, node_threshold: float | None = None, edge_threshold: float | None = None) -> Pruned:
        """The nodes and edges kept at the thresholds (default: the config's)."""
        return prune(self.adjacency, self.logit_probs, self.n_feat, self.n_pos,
                     self.config.node_threshold if node_threshold is None else node_threshold,
                     self.config.edge_threshold if edge_threshold is None else edge_threshold)

    def summary(self) -> dict:
        """Targets, sizes, scores, cost, and the kept features ranked by influence."""
        p = self.pruned()
        kept = [i for i in torch.nonzero(p.nodes).view(-1).tolist() if self.kind(i) in ("feature", "error")]
        kept.sort(key=lambda i: float(p.cumulative[i]))
        targets = [{"token": t, "prob": round(float(q), 4)} for t, q in zip(self.logit_tokens, self.logit_probs)]
        return {"model": self.model, "prompt": self.prompt, "tokens": self.tokens, "targets": targets,
                "nodes": int(self.adjacency.shape[0]), "features_explored": self.n_feat,
                "active_features": self.active_features, "kept_nodes": int(p.nodes.sum()),
                "kept_edges": int(p.edges.sum()),
                "scores": self.scores, "cost": self.cost, "transcoders": self.transcoders,
                "top": [{"node": self.label(i), "cumulative_influence": round(float(p.cumulative[i]), 4),
                         "direct_to_top_logit": round(float(self.adjacency[-len(self.logit_tokens), i]), 4)}
                        for i in kept[:20]]}

    def to_json(self, slug: str = "lmscope-graph", scan: str = "") -> dict:
        """circuit-tracer's graph JSON (what its frontend and Neuronpedia read): metadata, qParams, nodes, links."""
        p = self.pruned()
        nodes, ids = [], {}
        for i in torch.nonzero(p.nodes).view(-1).tolist():
            node = self._json_node(i, float(p.cumulative[i]))
            ids[i] = node["node_id"]
            nodes.append(node)
        links = [{"source": ids[s], "target": ids[t], "weight": float(self.adjacency[t, s])}
                 for t, s in torch.nonzero(p.edges).tolist() if s in ids and t in ids]
        touched = {link["source"] for link in links} | {link["target"] for link in links}
        nodes = [n for n in nodes if n["node_id"] in touched or n["feature_type"] in ("embedding", "logit")]
        return {"metadata": {"slug": slug, "scan": scan or self.transcoders, "transcoder_list": [],
                             "prompt_tokens": self.tokens, "prompt": self.prompt,
                             "node_threshold": self.config.node_threshold, "schema_version": 1},
                "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
                "nodes": nodes, "links": links}

    def _json_node(self, i: int, cumulative: float) -> dict:
        kind, (layer, pos) = self.kind(i), self.where(i)
        base = {"token_prob": 0.0, "is_target_logit": False, "run_idx": 0, "reverse_ctx_idx": 0, "clerp": "",
                "influence": cumulative, "activation": None, "ctx_idx": pos}
        if kind == "feature":
            f = int(self.features[i, 2])
            return {**base, "node_id": f"{layer}_{f}_{pos}", "feature": cantor(layer, f), "layer": str(layer),
                    "feature_type": "cross layer transcoder", "jsNodeId": f"{layer}_{f}-0",
                    "activation": float(self.activations[i])}
        if kind == "error":
            return {**base, "node_id": f"0_{layer}_{pos}", "feature": -1, "layer": str(layer),
                    "feature_type": "mlp reconstruction error", "jsNodeId": f"{layer}_{pos}-0"}
        if kind == "token":
            tok = int(self.input_ids[pos])
            return {**base, "node_id": f"E_{tok}_{pos}", "feature": pos, "layer": "E", "feature_type": "embedding",
                    "jsNodeId": f"E_{tok}-{pos}"}
        j = self.logit_index(i)
        vocab, prob = int(self.logit_ids[j]), float(self.logit_probs[j])
        return {**base, "node_id": f"{self.n_layers + 1}_{vocab}_{pos}", "feature": vocab,
                "layer": str(self.n_layers + 1), "feature_type": "logit", "jsNodeId": f"L_{vocab}-{pos}",
                "token_prob": prob, "is_target_logit": j == 0, "influence": None,
                "clerp": f"Output \"{self.logit_tokens[j]}\" (p={prob:.3f})"}


def cantor(layer: int, feature: int) -> int:
    """circuit-tracer's feature id: the Cantor pairing of (layer, feature)."""
    return (layer + feature) * (layer + feature + 1) // 2 + feature
