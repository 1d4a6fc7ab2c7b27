r"""A result as the JSON the workbench page draws: a title, a few key numbers and a list of blocks.

Blocks are generic (``heatmap``, ``table``, ``kv``, ``figures``) so the page needs one renderer per block type,
not one per method: a heat map carries its row and column labels, values, colour scale (``vmin`` / ``vmax``, the
same as its PNG's) and the hover text of every cell; a table carries its columns and rows (the page sorts them).
Results without a dedicated view get their summary as key numbers and tables. Tokens made only of whitespace are
drawn visibly (``"\n"`` as ``↵``, ``" "`` as ``␣``); hover text keeps their exact ``repr``. Non-finite floats become
null (JSON has no NaN).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lmscope.io import Result, to_json


def clean(value: Any) -> Any:
    """JSON-safe: tensors as lists, NaN / inf as None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, torch.Tensor):
        return clean(value.tolist())
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


WHITESPACE = {"\n": "↵", "\t": "⇥", "\r": "␍", " ": "␣"}


def visible(token: str) -> str:
    """A token as a grid cell shows it: whitespace-only tokens (and newlines anywhere) made visible."""
    if token == "":
        return "∅"
    if token.strip() == "":
        return "".join(WHITESPACE.get(c, "·") for c in token)
    return token.replace("\n", "↵").replace("\r", "␍").replace("\t", "⇥")


def heatmap(title: str, rows: list[str], cols: list[str], values, hover=None, text=None, **extra) -> dict:
    """A heat map block: values[r][c]; ``hover[r][c]`` and ``text[r][c]`` optional strings."""
    return {"type": "heatmap", "title": title, "rows": rows, "cols": cols, "values": values,
            "hover": hover, "text": text, **extra}


def table(title: str, columns: list[str], rows: list[list]) -> dict:
    """A sortable table block."""
    return {"type": "table", "title": title, "columns": columns, "rows": rows}


def kv(title: str, items: dict) -> dict:
    """Key numbers."""
    return {"type": "kv", "title": title, "items": items}


def lens_view(r) -> dict:
    """Lens (logit or tuned): layers x tokens, the top-1 token in each cell, its probability as colour, top-5 on hover.

    The title and the key say which readout it was read through.
    """
    k = min(5, r.top_probs.shape[-1])
    order = list(range(r.n_rows))[::-1]  # the last layer on top, as in the paper's figures
    probs = r.top_probs[..., 0]
    hover = [[f"layer {r.layer_labels[i]} · token {p} {r.tokens[p]!r}\n" + "\n".join(
        f"{r.top_tokens[i][p][j]!r} {float(r.top_probs[i, p, j]):.3f}" for j in range(k))
        + f"\nKL {float(r.kl[i, p]):.3f} · entropy {float(r.entropy[i, p]):.3f}" for p in range(len(r.tokens))]
        for i in order]
    blocks = [heatmap("top-1 token per layer and position (colour: its probability)",
                      [r.layer_labels[i] for i in order], [visible(t) for t in r.tokens],
                      [probs[i].tolist() for i in order], hover,
                      [[visible(r.top_tokens[i][p][0]) for p in range(len(r.tokens))] for i in order],
                      vmin=0.0, vmax=1.0, row_axis="layer", col_axis="token", legend="P(top-1 token)"),
              table("last position, every layer", ["layer", "top-1", "p", "KL", "entropy"],
                    [[r.layer_labels[i], r.top_tokens[i][-1][0], float(r.top_probs[i, -1, 0]),
                      float(r.kl[i, -1]), float(r.entropy[i, -1])] for i in range(r.n_rows)])]
    label = r.readout_label
    return {"title": f"{label[0].upper()}{label[1:]}: {r.prompt!r}",
            "key": {"model": r.model, "readout": label, "top token": repr(r.top_token()),
            "p": float(r.top_probs[-1, -1, 0])}, "blocks": blocks}


PALETTE = {"hidden": "purple", "mlp": "green", "attn": "red"}  # the ROME paper's colours


def trace_view(r) -> dict:
    """Causal trace: tokens x layers per kind, P*_restored[target] as colour (the subject's tokens starred)."""
    a, b = r.subject_range
    rows = [f"{visible(t)}*" if a <= i < b else visible(t) for i, t in enumerate(r.tokens)]
    blocks = []
    for kind, scores in r.scores.items():
        n_layers = scores.shape[1]
        hover = [[f"token {i} {r.tokens[i]!r} · layer {layer} · {kind}\nP*_restored {float(scores[i, layer]):.4f}"
                  for layer in range(n_layers)] for i in range(len(r.tokens))]
        # the PNG's scale: from the corrupted run's probability to this kind's own maximum
        blocks.append(heatmap(f"restoring {kind}: P({r.target!r})", rows, [str(x) for x in range(n_layers)],
                              scores.tolist(), hover, vmin=min(r.corrupted_prob, float(scores.min())),
                              vmax=float(scores.max()), row_axis="token", col_axis="layer",
                              palette=PALETTE.get(kind, "purple"), legend=f"P*_restored({r.target!r})"))
    key = {"model": r.model, "subject": r.subject, "target": repr(r.target), "P clean": r.clean_prob,
           "P* corrupted": r.corrupted_prob, "noise": r.noise}
    return {"title": f"Causal trace: {r.prompt!r}", "key": key, "blocks": blocks,
            "notes": list(r.notes)}


def trace_dataset_view(r) -> dict:
    """Average indirect effects over facts: token group x layer per kind (ROME's Figure 2)."""
    blocks = []
    for kind, aie in r.aie.items():
        n_layers = aie.shape[1]
        hover = [[f"{g} (n = {r.group_counts[i]}) · layer {layer} · {kind}\nAIE {float(aie[i, layer]):.4f}"
                  for layer in range(n_layers)] for i, g in enumerate(r.groups)]
        blocks.append(heatmap(f"average indirect effect, restoring {kind}", list(r.groups),
                              [str(x) for x in range(n_layers)], aie.tolist(), hover, vmin=0.0,
                              vmax=max(float(aie.max()), 1e-9), row_axis="tokens", col_axis="layer",
                              palette=PALETTE.get(kind, "purple"), legend="average indirect effect"))
    summary = r.summary()
    key = {k: summary[k] for k in ("model", "facts", "traced", "ate", "mean_clean_prob", "mean_corrupted_prob")}
    return {"title": f"Causal tracing over {r.n_kept} facts", "key": key, "blocks": blocks}


def patching_view(r) -> dict:
    """Activation patching: layers x positions (or heads) per kind."""
    blocks = []
    for kind, scores in r.scores.items():
        cols = [str(h) for h in range(scores.shape[1])] if kind == "heads" else [visible(t) for t in r.tokens]
        hover = [[f"layer {layer} · {'head' if kind == 'heads' else 'token'} {cols[c]!r}\nscore "
                  f"{float(scores[layer, c]):.4f}" for c in range(scores.shape[1])] for layer in range(scores.shape[0])]
        blocks.append(heatmap(f"{kind} ({r.method})", [str(x) for x in range(scores.shape[0])], cols,
                              scores.tolist(), hover, vmin=-1.0, vmax=1.0, diverging=True, row_axis="layer",
                              col_axis="head" if kind == "heads" else "token", legend="patching score"))
    return {"title": f"Patching: {r.corrupted!r}", "key": {"model": r.model, "clean metric": r.clean_metric,
            "corrupted metric": r.corrupted_metric}, "blocks": blocks}


def neurons_view(r) -> dict:
    """Neuron attribution: per prompt the top neurons with both scores, ranks and vocabulary."""
    blocks = []
    for b, prompt in enumerate(r.prompts):
        rows = [[f"L{n['layer']}.{n['neuron']}", n["layer"], n["neuron"], n.get("contribution"), n.get("gradxact"),
                 n.get("rank_contribution"), n.get("rank_gradxact"), " ".join(repr(v) for v in n["vocab"][:6])]
                for n in r.top[b]]
        blocks.append(kv(f"{prompt!r} -> {r.targets[b]!r}", {"P(target)": r.target_prob[b],
                         "Spearman": r.agreement[b], "top-k overlap": r.overlap[b]}))
        blocks.append(table("top neurons", ["neuron", "layer", "index", "contribution", "grad x act",
                                            "rank (contribution)", "rank (grad x act)", "writes"], rows))
    return {"title": f"Neurons: {r.prompts[0]!r}", "key": {"model": r.model, "method": r.config.method},
            "blocks": blocks, "notes": list(r.notes)}


def lesion_view(r) -> dict:
    """A lesion: the top next tokens before and after."""
    rows = [[i + 1, bt, bp, at, ap] for i, ((bt, bp), (at, ap)) in enumerate(zip(r.before, r.after))]
    return {"title": f"Lesion ({r.label}): {r.prompt!r}", "key": {"model": r.model, "lesion": r.label},
            "blocks": [table("top next tokens", ["rank", "unmodified", "p", r.label, "p after"], rows)]}


def edit_view(r, states: dict | None = None) -> dict:
    """A ROME edit: its key numbers, the v* optimisation, and P(target) and the generation before and after.

    ``states``: edit.json's ``before`` / ``after`` (the workbench's edits and ``lmscope edit`` write it).
    """
    summary = r.summary()
    key = {k: summary[k] for k in ("model", "layer", "layer_source", "delta_norm") if k in summary}
    blocks = [kv("request", {"prompt": r.request.text, "target": repr(r.request.target)})]
    states = states or {}
    if "before" in states and "after" in states:
        rows = [[name, states[name].get("p_target"), states[name].get("generation")] for name in ("before", "after")]
        blocks.append(table("before and after the edit", ["", "P(target)", "generation"], rows))
    blocks.append(table("v* optimisation", ["step", *r.losses[0].keys()], [[i, *step.values()]
                                                                            for i, step in enumerate(r.losses)])
                  if r.losses else kv("v* optimisation", {}))
    return {"title": f"ROME edit: {r.request.text!r} -> {r.request.target!r}", "key": key, "blocks": blocks}


def _json_file(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def generic_view(result: Result) -> dict:
    """Any other result: its summary's scalars as key numbers, its lists of records as tables."""
    summary = result.summary()
    scalars = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}
    blocks = [kv("summary", scalars)] if scalars else []
    for name, value in summary.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            columns = list(dict.fromkeys(k for v in value for k in v))
            rows = [[_short(v.get(c)) for c in columns] for v in value[:500]]
            blocks.append(table(name, columns, rows))
        elif isinstance(value, dict) and value and all(isinstance(v, (int, float)) for v in value.values()):
            blocks.append(kv(name, value))
    model = summary.get("model", "")
    return {"title": type(result).__name__, "key": {"model": model} if model else {}, "blocks": blocks}


def _short(value: Any) -> Any:
    """A table cell: numbers and strings as they are, anything nested as compact JSON text (cut)."""
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    text = str(to_json(value))
    return text if len(text) <= 120 else text[:117] + "..."


MAX_GRAPH_EDGES = 600  # the strongest kept edges sent to the page


def graph_view(r) -> dict:
    """Attribution graph: the pruned graph, its scores and its most influential nodes.

    Nodes by position and layer, edges by sign and weight; on the page, hover a node for its name and influence
    (and a feature's explanation and top contexts, where a feature-pages run of its transcoder is listed: see
    :func:`add_feature_notes`), click it to see its edges alone and to clamp it (a workbench serving transcoders).
    """
    kept = r.pruned()
    ids = [int(i) for i in kept.nodes.nonzero().view(-1)]
    nodes = []
    for i in ids:
        layer, pos = r.where(i)
        feature = r.kind(i) == "feature"
        nodes.append({"id": i, "kind": r.kind(i), "label": r.label(i), "layer": layer, "pos": pos,
                      "influence": float(kept.cumulative[i]), "feature": int(r.features[i, 2]) if feature else None,
                      "activation": float(r.activations[i]) if feature else None})
    pairs = [(int(t), int(s)) for t, s in kept.edges.nonzero().tolist()]
    pairs.sort(key=lambda ts: -abs(float(r.adjacency[ts[0], ts[1]])))
    edges = [{"s": s, "t": t, "w": float(r.adjacency[t, s])} for t, s in pairs[:MAX_GRAPH_EDGES]]
    summary = r.summary()
    block = {"type": "graph", "title": f"pruned graph: {len(nodes)} nodes, {len(pairs)} edges (the strongest "
                                        f"{len(edges)} drawn)", "tokens": [visible(t) for t in r.tokens],
             "layers": r.n_layers, "nodes": nodes, "edges": edges, "prompt": r.prompt, "model": r.model,
             "transcoders": r.transcoders}
    top = table("most influential nodes", ["node", "cumulative influence", "direct effect on the top logit"],
                [[t["node"], t["cumulative_influence"], t["direct_to_top_logit"]] for t in summary["top"]])
    return {"title": f"Attribution graph: {r.prompt!r}",
            "key": {"model": r.model,
                    "targets": ", ".join(f"{t['token']!r} {t['prob']:.3f}" for t in summary["targets"]),
                    "replacement": r.scores.get("replacement"), "completeness": r.scores.get("completeness"),
                    "features": f"{summary['features_explored']} of {summary['active_features']}"},
            "blocks": [block, top, *([table("heads carrying the strongest edges", ["source", "target", "edge", "heads"],
                                            [[e["source"], e["target"], e["weight"],
                                              ", ".join(f"L{la}.H{h} {v:+.3f}" for la, h, v in e["heads"])]
                                             for e in r.heads])] if r.heads else [])]}


def add_feature_notes(page: dict, notes: Callable[[str, list[tuple[str, int]]], dict]) -> dict:
    """A graph view with each feature node's explanation and top contexts (``note``), where known (a new dict).

    ``notes(model, [(site, feature), ...])`` -> {(site, feature): note}; a transcoder of layer L reads ``mlp_in.L``.
    """
    blocks = []
    for block in page.get("blocks", []):
        if block.get("type") == "graph":
            key = {n["id"]: (f"mlp_in.{n['layer']}", n["feature"]) for n in block["nodes"] if n["kind"] == "feature"}
            found = notes(block.get("model", ""), list(key.values()))
            block = {**block, "nodes": [{**n, "note": found[key[n["id"]]]} if key.get(n["id"]) in found else n
                                        for n in block["nodes"]]}
        blocks.append(block)
    return {**page, "blocks": blocks}


VIEWS: dict[str, Callable[[Any], dict]] = {
    "LogitLensResult": lens_view, "TraceResult": trace_view, "TraceDatasetResult": trace_dataset_view,
    "PatchingResult": patching_view,
    "NeuronResult": neurons_view, "LesionResult": lesion_view, "AttributionGraph": graph_view,
}
FOLDER_VIEWS: dict[str, Callable[[Any, Path | None], dict]] = {  # views that read their run folder too
    "RomeEdit": lambda r, folder: edit_view(r, _json_file(folder / "edit.json") if folder else None)}


def view(result: Result, folder: str | Path | None = None) -> dict:
    """The page's JSON for ``result`` (a dedicated view for its kind, else the generic one); ``folder``: its run."""
    kind = type(result).__name__
    if kind in FOLDER_VIEWS:
        body = FOLDER_VIEWS[kind](result, Path(folder) if folder is not None else None)
    else:
        body = VIEWS.get(kind, generic_view)(result)
    return clean({"kind": kind, "notes": [], **body})
