"""Options of an attribution graph, with circuit-tracer's defaults (Ameisen et al. 2025; circuit-tracer 0.5)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmscope import config as check


@dataclass
class GraphConfig:
    """Which logits are explained, how the backward passes are batched, how the graph is pruned."""

    max_n_logits: int = field(default=10, metadata={
        "help": "most target logits (the top ones, up to desired-logit-prob of the probability)", "min": 1,
        "max": 100})
    desired_logit_prob: float = field(default=0.95, metadata={
        "help": "target logits are the most likely tokens until their probability sums to this", "min": 0.0,
        "max": 1.0})
    batch_size: int = field(default=64, metadata={
        "help": "targets per backward pass (copies of the prompt in one forward pass)", "min": 1, "max": 4096})
    max_feature_nodes: int = field(default=0, metadata={
        "help": "most features explored, the most influential first (0: every active feature)", "min": 0})
    update_interval: int = field(default=4, metadata={
        "help": "batches between re-rankings of the unexplored features by their influence so far", "min": 1})
    zero_first: bool = field(default=True, metadata={
        "help": "the first position (BOS, or the attention sink of a model without one) has no feature or error "
                "nodes, only its token (circuit-tracer's BOS rule)"})
    node_threshold: float = field(default=0.8, metadata={
        "help": "pruning keeps the nodes carrying this fraction of the influence on the logits", "min": 0.0,
        "max": 1.0})
    edge_threshold: float = field(default=0.98, metadata={
        "help": "pruning keeps the edges carrying this fraction of the influence", "min": 0.0, "max": 1.0})
    max_memory_gb: float = field(default=4.0, metadata={
        "help": "refuse a graph whose estimated peak memory is above this (GB)", "min": 0.0})

    def __post_init__(self) -> None:
        check.at_least(self, 1, "max_n_logits", "batch_size", "update_interval")
        check.at_least(self, 0, "max_feature_nodes", "max_memory_gb")
        check.finite(self, "desired_logit_prob", "node_threshold", "edge_threshold", "max_memory_gb")
        check.bounds(self)
