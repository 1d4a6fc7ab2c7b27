"""The intervention check: remove a graph's top features from the real model, compare with the graph's prediction.

:func:`clamp` is the interactive form (the workbench's click on a feature): set any features of a prompt to a
multiple of their activation, or to a value, and read the next-token distribution before and after.

For feature s at (layer l, position p) with activation a_s, zeroing it subtracts ``a_s D_s`` from the MLP output at
(l, p). The graph predicts the change of each target logit (demeaned) two ways: its direct edge (``-A[logit, s]``,
everything downstream held) and the total effect through the graph (a change of a downstream feature's
pre-activation moves its activation by as much: ``-(I + P + P^2 + ...) A[:, s]`` with ``P[u, t] = A[u, t] / a_t``
for feature columns). The real model then runs unfrozen (attention, norms and every later MLP recomputed, so the
error terms are too) with the subtraction hooked in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmscope.errors import InputError
from lmscope.io import Result
from lmscope.methods.graphs.replacement import PromptState, replacement, setup
from lmscope.methods.graphs.result import AttributionGraph
from lmscope.methods.graphs.transcoders import LayerTranscoder
from lmscope.model.hooks import add, capture
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


@dataclass
class InterventionCheck(Result):
    """A graph's top features removed one at a time: predicted and measured changes of the top logit (demeaned).

    ``rows``: node, direct (the graph's edge), total (through the graph), measured in the replacement model
    (attention, norms and later MLP outputs frozen: must equal direct) and in the real model.
    """

    model: str
    prompt: str
    target: str
    transcoders: str
    rows: list[dict] = field(default_factory=list)

    def agreement(self) -> dict:
        """Pearson correlation of each prediction with the real model's change over the rows (None: undefined)."""
        real = torch.tensor([r["measured"] for r in self.rows], dtype=torch.float64)
        out = {}
        for key in ("direct", "total"):
            pred = torch.tensor([r[key] for r in self.rows], dtype=torch.float64)
            ok = len(self.rows) > 2 and float(pred.std()) > 0 and float(real.std()) > 0
            out[key] = float(torch.corrcoef(torch.stack([pred, real]))[0, 1]) if ok else None
        return out

    def summary(self) -> dict:
        """The rows and the correlations of the predictions with the real model."""
        return {"model": self.model, "prompt": self.prompt, "target": self.target, "transcoders": self.transcoders,
                "correlation_with_real": self.agreement(), "rows": self.rows}


def check_graph(lm: LM, graph: AttributionGraph, transcoders: dict[int, LayerTranscoder],
                top: int = 10) -> InterventionCheck:
    """:func:`intervene` on the real model and on the replacement model, as one result."""
    real = intervene(lm, graph, transcoders, top)
    if not real:
        raise InputError(f"the graph of {graph.prompt!r} keeps no feature at its node threshold "
                         f"({graph.config.node_threshold}): nothing to remove")
    frozen = intervene(lm, graph, transcoders, top, linearised=True)
    rows = [{"node": r.node, "direct": r.direct, "total": r.total, "measured_replacement": f.measured,
             "measured": r.measured} for r, f in zip(real, frozen)]
    return InterventionCheck(lm.name, graph.prompt, graph.logit_tokens[0], graph.transcoders, rows)


@dataclass
class Clamp:
    """The next-token distribution of a prompt before and after setting some transcoder features' activations."""

    prompt: str
    features: list[dict]  # layer, position, feature, activation before, activation set
    before: list[tuple[str, float]]  # the top tokens and their probabilities, unmodified
    after: list[tuple[str, float]]  # the same after the clamp
    logits: list[dict]  # token, demeaned logit before and after, for the union of both top lists

    def as_dict(self) -> dict:
        """JSON-ready."""
        return {"prompt": self.prompt, "features": self.features, "before": self.before, "after": self.after,
                "logits": self.logits}


def clamp(lm: LM, prompt: str, transcoders: dict[int, LayerTranscoder], features: list[tuple[int, int, int]],
          scale: float = 0.0, value: float | None = None, top: int = 10) -> Clamp:
    """Set features (layer, position, feature) to ``scale`` x their activation (or to ``value``) in the real model.

    The real model's MLP output at (layer, position) moves by (new - old) x the feature's decoder row; everything
    downstream (attention, norms, later MLPs) is recomputed. Old activations come from the transcoders on this
    prompt's clean run, so a feature that is not active moves only when ``value`` is given.
    """
    ids = lm.tokenize(prompt)["input_ids"].to(lm.device)  # (1, pos)
    n_pos = ids.shape[1]
    for layer, pos, feat in features:
        if layer not in transcoders or not 0 <= pos < n_pos or not 0 <= feat < transcoders[layer].width:
            raise InputError(f"no feature L{layer}.F{feat} at position {pos}: the prompt has {n_pos} tokens, the "
                             f"transcoders cover layers {sorted(transcoders)}")
    layers = sorted({layer for layer, _, _ in features})
    with torch.no_grad(), lm.hooks(*(capture(Site(la, "mlp_in")) for la in layers)) as cache:
        clean = lm.model(input_ids=ids, use_cache=False).logits[0, -1].float()
    ops, rows = [], []
    for layer, pos, feat in features:
        old = float(transcoders[layer].encode(cache[Site(layer, "mlp_in")][0, pos].float()[None])[0, feat])
        new = value if value is not None else scale * old
        ops.append(add(Site(layer, "mlp_out"), ((new - old) * transcoders[layer].decoder[feat]).to(lm.dtype),
                       positions=[pos]))
        rows.append({"node": f"L{layer}.F{feat}@{pos}", "layer": layer, "position": pos, "feature": feat,
                     "activation": old, "set_to": new})
    with torch.no_grad(), lm.hooks(*ops):
        moved = lm.model(input_ids=ids, use_cache=False).logits[0, -1].float()
    return Clamp(prompt, rows, _top(lm, clean, top), _top(lm, moved, top), _logit_rows(lm, clean, moved, top))


def _top(lm: LM, logits: torch.Tensor, k: int) -> list[tuple[str, float]]:
    probs = logits.softmax(-1)
    values, ids = probs.topk(k)
    return list(zip(lm.to_str_tokens(ids), [round(float(v), 5) for v in values]))


def _logit_rows(lm: LM, clean: torch.Tensor, moved: torch.Tensor, k: int) -> list[dict]:
    ids = list(dict.fromkeys(clean.topk(k).indices.tolist() + moved.topk(k).indices.tolist()))
    a, b = clean - clean.mean(), moved - moved.mean()
    return [{"token": tok, "before": round(float(a[i]), 4), "after": round(float(b[i]), 4),
             "change": round(float(b[i] - a[i]), 4)} for tok, i in zip(lm.to_str_tokens(ids), ids)]
