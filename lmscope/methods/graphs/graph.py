"""The public entry: :func:`attribution_graph` of one prompt, with its estimate checked before the work starts."""

from __future__ import annotations

import logging
import resource
import time

from lmscope.errors import InputError
from lmscope.methods.graphs.attribute import attribute, estimate, logit_targets, probe_seconds
from lmscope.methods.graphs.config import GraphConfig
from lmscope.methods.graphs.prune import scores
from lmscope.methods.graphs.replacement import setup
from lmscope.methods.graphs.result import AttributionGraph
from lmscope.methods.graphs.transcoders import LayerTranscoder
from lmscope.model.lm import LM

log = logging.getLogger(__name__)


def target_ids(lm: LM, targets: list[str]) -> list[int]:
    """Token ids of target strings, each one token (" Paris")."""
    out = []
    for text in targets:
        ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise InputError(f"target {text!r} is {len(ids)} tokens for {lm.name}; give one token (e.g. ' Paris')")
        out.append(ids[0])
    return out


def attribution_graph(lm: LM, prompt: str, transcoders: dict[int, LayerTranscoder], config: GraphConfig | None = None,
                      targets: list[str] | None = None, source: str = "") -> AttributionGraph:
    """The attribution graph of ``prompt``'s next-token logits (the top ones, or ``targets``) over ``transcoders``.

    Layers without a transcoder keep their whole MLP output as error nodes. The estimated peak memory is checked
    against ``config.max_memory_gb`` before any backward pass; the time is estimated from one timed pass (logged).
    """
    config = config or GraphConfig()
    t0 = time.perf_counter()
    ids = lm.tokenize(prompt)["input_ids"]
    state = setup(lm, ids, transcoders, config.zero_first)
    chosen = logit_targets(lm, state.logits, config, target_ids(lm, targets) if targets else None)
    cost = estimate(state, len(chosen.ids), config, lm.d_model)
    gb = cost["memory_bytes"] / 1e9
    if config.max_memory_gb and gb > config.max_memory_gb:
        raise InputError(f"this graph needs about {gb:.1f} GB (> --max-memory-gb {config.max_memory_gb:g}): "
                         f"{len(state.values)} active features; lower --max-feature-nodes or --batch-size")
    cost = estimate(state, len(chosen.ids), config, lm.d_model, probe_seconds(lm, state, config.batch_size))
    log.info("graph of %r: %d active features, %d nodes, %d backward passes, about %.2f GB and %.0f s", prompt,
             len(state.values), cost["nodes"], cost["backward_passes"], gb, cost["seconds_estimate"])
    adjacency, explored = attribute(lm, state, chosen, config)
    n_feat = len(explored)
    cost.update(seconds=round(time.perf_counter() - t0, 2),
                peak_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3))
    return AttributionGraph(
        model=lm.name, prompt=prompt, tokens=lm.to_str_tokens(ids[0]), input_ids=ids[0].cpu(), n_layers=lm.n_layers,
        features=state.features[explored], activations=state.values[explored], adjacency=adjacency,
        logit_ids=chosen.ids, logit_probs=chosen.probs, logit_tokens=lm.to_str_tokens(chosen.ids),
        active_features=len(state.values), transcoders=source,
        scores=scores(adjacency, chosen.probs, n_feat, state.n_layers * state.n_pos, state.n_pos), cost=cost,
        config=config)
