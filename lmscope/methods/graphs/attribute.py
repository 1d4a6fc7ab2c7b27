"""Attribution: the edges of the graph, a batch of targets per backward pass (circuit-tracer's algorithm).

Node order (rows and columns of the adjacency, ``[target, source]``): the explored features in (layer, position,
feature) order, the error nodes (layer-major, ``n_layers x n_pos``), the tokens (``n_pos``), the target logits.
A target's input vector ``w_t`` is a feature's encoder direction (its pre-activation, read at the MLP input) or a
logit's demeaned unembedding row ``W_U[t] - mean_v W_U[v]`` (read at the final norm's output). A source's output
vector is ``a_s D_s`` for a feature, ``e_{l,p}`` for an error node, the embedding for a token. The edge is
``w_t . J v_s`` with J the replacement model's (frozen, linear) map between the two: one backward pass from
``w_t . x_t`` gives it for every source at once. ``batch_size`` copies of the prompt in one forward pass carry that
many targets per backward pass.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch

from lmscope.methods.graphs.config import GraphConfig
from lmscope.methods.graphs.prune import normalize
from lmscope.methods.graphs.replacement import EMBED, PromptState, final_norm_site, replacement
from lmscope.model.lm import LM
from lmscope.model.sites import Site
from lmscope.model.weights import frozen
from lmscope.progress import tqdm

log = logging.getLogger(__name__)


@dataclass
class Targets:
    """The logits a graph explains: ids, probabilities and their demeaned unembedding rows."""

    ids: torch.Tensor  # (k,)
    probs: torch.Tensor  # (k,)
    vectors: torch.Tensor  # (k, d) W_U[t] - mean_v W_U[v]


def logit_targets(lm: LM, logits: torch.Tensor, config: GraphConfig, ids: list[int] | None = None) -> Targets:
    """The most likely next tokens until ``desired_logit_prob`` (at most ``max_n_logits``), or the ``ids`` given."""
    probs = torch.softmax(logits.float(), -1)
    if ids is None:
        top_p, top_i = probs.topk(min(config.max_n_logits, probs.shape[0]))
        cut = int(torch.searchsorted(top_p.cumsum(0), torch.tensor(config.desired_logit_prob))) + 1
        chosen = top_i[:min(cut, len(top_i))]
    else:
        chosen = torch.tensor(ids, dtype=torch.long)
    w_u = lm.W_U.detach().float()  # (vocab, d)
    return Targets(chosen, probs[chosen], w_u[chosen] - w_u.mean(0))


class Attributor:
    """Backward passes through the replacement model of one prompt, ``batch`` targets at a time."""

    def __init__(self, lm: LM, state: PromptState, batch: int):
        self.lm, self.state, self.batch = lm, state, batch
        self.n_feat, self.n_pos, self.n_layers = len(state.values), state.n_pos, state.n_layers
        f = state.features
        self.by_layer = [torch.nonzero(f[:, 0] == layer).view(-1) for layer in range(self.n_layers)]
        self.decoded = [self._decoded(layer) for layer in range(self.n_layers)]  # (n_l, d): a_s D_s

    @property
    def n_sources(self) -> int:
        """Features, errors and tokens (the columns a target row fills)."""
        return self.n_feat + self.n_layers * self.n_pos + self.n_pos

    def _decoded(self, layer: int) -> torch.Tensor:
        idx = self.by_layer[layer]
        if len(idx) == 0:
            return torch.zeros(0, self.lm.d_model)
        tc = self.state.transcoders[layer]
        return self.state.values[idx, None] * tc.decoder[self.state.features[idx, 2]]

    def rows(self, targets: list[tuple[int, int, torch.Tensor]], row_ops=None) -> torch.Tensor:
        """Edge rows (len(targets), n_sources) of targets given as (layer or -1 for a logit, position, w_t).

        ``row_ops(i, target_index)``: extra hook ops for batch row i (e.g. one head removed for that row only).
        """
        out = []
        for start in range(0, len(targets), self.batch):
            ops = [op for i in range(min(self.batch, len(targets) - start)) for op in row_ops(i, start + i)] \
                if row_ops else []
            out.append(self._batch(targets[start:start + self.batch], ops))
        return torch.cat(out) if out else torch.zeros(0, self.n_sources)

    def _batch(self, targets: list[tuple[int, int, torch.Tensor]], ops=()) -> torch.Tensor:
        lm, state, b = self.lm, self.state, len(targets)
        with frozen(lm.model), torch.enable_grad(), replacement(lm, state, *ops) as taps:
            lm.model(input_ids=state.ids.expand(b, -1), use_cache=False)
            objective, final = 0.0, final_norm_site(lm)
            for i, (layer, pos, w) in enumerate(targets):
                x = taps.cache[final] if layer < 0 else taps.cache[Site(layer, "mlp_in")]
                objective = objective + x[i, pos].float() @ w.to(x.device)
            leaves = [taps.store[EMBED][1], *(taps.store[Site(layer, "mlp_out")][1] for layer in range(self.n_layers))]
            grads = torch.autograd.grad(objective, leaves, allow_unused=True)
        return self._contract(grads, b)

    def _contract(self, grads, b: int) -> torch.Tensor:
        """The gradients (at the embeddings and every MLP output) dotted with every source's output vector."""
        row = torch.zeros(b, self.n_sources)
        g_embed, g_out = grads[0], grads[1:]
        for layer, g in enumerate(g_out):
            if g is None:
                continue
            g = g.float()  # (b, pos, d)
            idx = self.by_layer[layer]
            if len(idx):
                pos = self.state.features[idx, 1]
                row[:, idx] = torch.einsum("bkd,kd->bk", g[:, pos], self.decoded[layer])
            start = self.n_feat + layer * self.n_pos
            row[:, start:start + self.n_pos] = torch.einsum("bpd,pd->bp", g, self.state.errors[layer])
        if g_embed is not None:
            row[:, -self.n_pos:] = torch.einsum("bpd,pd->bp", g_embed.float(), self.state.tokens)
        return row


def feature_targets(state: PromptState, idx: torch.Tensor) -> list[tuple[int, int, torch.Tensor]]:
    """Features as targets: (layer, position, encoder direction)."""
    f = state.features[idx]
    return [(int(layer), int(pos), state.transcoders[int(layer)].encoder[int(feat)]) for layer, pos, feat in f]


def partial_influence(rows: torch.Tensor, row_nodes: torch.Tensor, weights: torch.Tensor, n_logits: int,
                      max_iter: int = 128) -> torch.Tensor:
    """Influence on the logits of every source column, from the rows computed so far (circuit-tracer's estimate).

    rows: (r, n_sources) with the logit rows last; row_nodes: (r,) the source column each row is (-1 for logits).
    """
    norm = normalize(rows)
    prod = torch.zeros(rows.shape[0])
    prod[-n_logits:] = weights
    influence = torch.zeros(rows.shape[1])
    for _ in range(max_iter):
        spread = prod @ norm  # (n_sources,)
        if not bool(spread.any()):
            break
        influence += spread
        known = row_nodes >= 0
        prod = torch.zeros(rows.shape[0])
        prod[known] = spread[row_nodes[known]]
    return influence


def attribute(lm: LM, state: PromptState, targets: Targets, config: GraphConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(adjacency (N, N) [target, source], the explored features' indices into ``state.features``).

    Logit rows first; then features, every one (``max_feature_nodes`` 0) or the most influential first, re-ranked
    every ``update_interval`` batches.
    """
    att = Attributor(lm, state, config.batch_size)
    t0 = time.perf_counter()
    logit_rows = att.rows([(-1, state.n_pos - 1, v) for v in targets.vectors])
    log.info("graph: %d logit rows in %.1f s; %d active features", len(targets.ids), time.perf_counter() - t0,
             att.n_feat)
    budget = att.n_feat if config.max_feature_nodes == 0 else min(att.n_feat, config.max_feature_nodes)
    rows, nodes = [logit_rows], [torch.full((len(targets.ids),), -1)]
    visited = torch.zeros(att.n_feat, dtype=torch.bool)
    bar = tqdm(total=budget, desc="graph features", unit="feature", leave=False)
    while int(visited.sum()) < budget:
        if budget == att.n_feat:  # every feature, in order, a few batches at a time (the bar moves)
            pending = torch.nonzero(~visited).view(-1)[:config.update_interval * config.batch_size]
        else:
            stacked = torch.cat(rows[1:] + rows[:1])  # logit rows last
            order_nodes = torch.cat(nodes[1:] + nodes[:1])
            influence = partial_influence(stacked, order_nodes, targets.probs, len(targets.ids))[:att.n_feat]
            ranked = influence.argsort(descending=True)
            pending = ranked[~visited[ranked]][:min(config.update_interval * config.batch_size,
                                                    budget - int(visited.sum()))]
        new = att.rows(feature_targets(state, pending))
        rows.append(new)
        nodes.append(pending)
        visited[pending] = True
        bar.update(len(pending))
    bar.close()
    explored = torch.nonzero(visited).view(-1)
    feat_rows, feat_nodes = rows[1:], nodes[1:]
    del rows, nodes  # _square frees each chunk once copied
    return _square(att, feat_rows, feat_nodes, logit_rows, explored), explored


def _square(att: Attributor, feat_rows: list[torch.Tensor], feat_nodes: list[torch.Tensor], logit_rows: torch.Tensor,
            explored: torch.Tensor) -> torch.Tensor:
    """The (N, N) adjacency over [explored features | errors | tokens | logits], filled one chunk of rows at a time.

    feat_rows: chunks (r, n_sources) of edge rows, feat_nodes: the feature each row is; both lists are emptied as
    they are copied (the rows are never held twice).
    """
    n_sel, n_fixed, n_logits = len(explored), att.n_layers * att.n_pos + att.n_pos, logit_rows.shape[0]
    n = n_sel + n_fixed + n_logits
    every = n_sel == att.n_feat  # every feature explored: no column to drop
    keep_cols = None if every else torch.cat([explored, torch.arange(att.n_feat, att.n_sources)])
    where = torch.full((att.n_feat,), -1, dtype=torch.long)
    where[explored] = torch.arange(n_sel)  # a feature's row in the adjacency
    adjacency = torch.zeros(n, n)
    while feat_rows:
        chunk, chunk_nodes = feat_rows.pop(0), feat_nodes.pop(0)
        adjacency[where[chunk_nodes], :n_sel + n_fixed] = chunk if every else chunk[:, keep_cols]
        del chunk
    adjacency[n_sel + n_fixed:, :n_sel + n_fixed] = logit_rows if every else logit_rows[:, keep_cols]
    return adjacency


def probe_seconds(lm: LM, state: PromptState, batch_size: int) -> float:
    """Seconds of one backward pass of a full batch (the first features as targets): the unit of the estimate."""
    att = Attributor(lm, state, batch_size)
    idx = torch.arange(min(batch_size, att.n_feat))
    t0 = time.perf_counter()
    att.rows(feature_targets(state, idx) if len(idx) else [(-1, state.n_pos - 1, torch.zeros(lm.d_model))])
    return time.perf_counter() - t0


def estimate(state: PromptState, n_logits: int, config: GraphConfig, d_model: int,
             pass_seconds: float = 0.0) -> dict:
    """Nodes, backward passes, peak memory (bytes) and time of a graph before it is computed.

    The time is the backward passes x ``pass_seconds`` (:func:`probe_seconds`, one pass timed on this prompt);
    bench/bench_graphs.py measures its error.
    """
    n_feat = len(state.values) if config.max_feature_nodes == 0 else min(len(state.values), config.max_feature_nodes)
    n = n_feat + state.n_layers * state.n_pos + state.n_pos + n_logits
    passes = math.ceil(n_logits / config.batch_size) + math.ceil(n_feat / config.batch_size)
    # the retained forward of batch_size copies: ~24 (pos, d) float32 tensors per layer; the (N, N) adjacency and
    # the rows computed before it is assembled (three copies while a capped exploration re-ranks: the rows, their
    # concatenation, its normalisation); every active feature's decoded output a_s D_s
    activations = config.batch_size * state.n_layers * state.n_pos * d_model * 4 * 24
    n_active = len(state.values)
    rows = (n_feat + n_logits) * (n_active + n - n_feat) * 4 * (3 if n_feat < n_active else 1)
    memory = 2 * n * n * 4 + rows + n_active * d_model * 4 + activations
    seconds = passes * pass_seconds
    return {"nodes": n, "features": n_feat, "backward_passes": passes, "memory_bytes": int(memory),
            "seconds_estimate": round(seconds, 2)}
