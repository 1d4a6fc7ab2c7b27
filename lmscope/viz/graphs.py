"""The figure and report of an attribution graph (they only read an AttributionGraph)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from lmscope.viz.report import HtmlReport

KIND_COLOURS = {"feature": "tab:green", "error": "tab:gray", "token": "tab:blue", "logit": "tab:orange"}
MAX_EDGES = 400  # the strongest kept edges drawn
MAX_NODES = 60  # the most influential kept features and error nodes drawn


def _layout(graph, nodes: list[int]) -> dict[int, tuple[float, float]]:
    """(x, y) per node: x the position (nodes of one cell spread across it), y the layer (tokens -1, logits L)."""
    cells: dict[tuple[int, int], list[int]] = {}
    for i in nodes:
        cells.setdefault(graph.where(i), []).append(i)
    xy = {}
    for (layer, pos), members in cells.items():
        for k, i in enumerate(members):
            offset = (k - (len(members) - 1) / 2) * min(0.8 / max(1, len(members)), 0.15)
            xy[i] = (pos + offset, layer)
    return xy


def _drawn(graph, kept, most: int) -> list[int]:
    """Tokens, logits and the ``most`` most influential kept features and error nodes."""
    nodes = torch.nonzero(kept.nodes).view(-1).tolist()
    inner = sorted((i for i in nodes if graph.kind(i) in ("feature", "error")), key=lambda i: float(kept.cumulative[i]))
    return [i for i in nodes if graph.kind(i) in ("token", "logit")] + inner[:most]


def graph_figure(graph, most: int = MAX_NODES, labels: int = 12) -> Figure:
    """The pruned graph's ``most`` most influential feature and error nodes, with the tokens and logits.

    Nodes by position and layer, the strongest edges among them coloured by sign, the first ``labels`` named.
    """
    kept = graph.pruned()
    nodes = _drawn(graph, kept, most)
    xy = _layout(graph, nodes)
    drawn = torch.zeros_like(kept.nodes)
    drawn[nodes] = True
    edges = torch.nonzero(kept.edges & drawn[:, None] & drawn[None, :]).tolist()
    weights = torch.tensor([float(graph.adjacency[t, s]) for t, s in edges]) if edges else torch.zeros(0)
    order = weights.abs().argsort(descending=True)[:MAX_EDGES].tolist()
    top = float(weights.abs().max()) if len(weights) else 1.0
    fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * graph.n_pos + 2), 0.18 * graph.n_layers + 2.8))
    for j in order:
        t, s = edges[j]
        if s in xy and t in xy:
            w = float(weights[j])
            ax.plot([xy[s][0], xy[t][0]], [xy[s][1], xy[t][1]], color="tab:red" if w < 0 else "tab:blue",
                    alpha=0.15 + 0.6 * abs(w) / top, lw=0.4 + 2.0 * abs(w) / top, zorder=1)
    for kind, colour in KIND_COLOURS.items():
        members = [i for i in nodes if graph.kind(i) == kind]
        if members:
            ax.scatter([xy[i][0] for i in members], [xy[i][1] for i in members], s=22, color=colour, label=kind,
                       zorder=2, edgecolors="white", linewidths=0.4)
    named = [i for i in nodes if graph.kind(i) in ("feature", "error")][:labels]
    for i in named:
        ax.annotate(graph.label(i).split("@")[0], xy[i], xytext=(3, 3), textcoords="offset points", fontsize=6,
                    color="dimgray")
    for j, token in enumerate(graph.logit_tokens[:3]):
        ax.annotate(f"{token!r} p={float(graph.logit_probs[j]):.2f}", (graph.n_pos - 1, graph.n_layers),
                    xytext=(6, 8 + 11 * j), textcoords="offset points", fontsize=7)
    ax.set_xticks(range(graph.n_pos), [t.replace("\n", "⏎") for t in graph.tokens], rotation=45, ha="right",
                  fontsize=8)
    ax.set_yticks([-1, *range(0, graph.n_layers, max(1, graph.n_layers // 10)), graph.n_layers],
                  ["emb", *map(str, range(0, graph.n_layers, max(1, graph.n_layers // 10))), "logit"], fontsize=7)
    ax.set_ylabel("layer")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    s = graph.scores
    inner = sum(graph.kind(i) in ("feature", "error") for i in nodes)
    ax.set_title(f"{graph.model}: {graph.prompt!r} — {int(kept.nodes.sum())} nodes and {int(kept.edges.sum())} "
                 f"edges kept (the {inner} most influential features and errors drawn); replacement "
                 f"{s.get('replacement', 0):.2f}, completeness {s.get('completeness', 0):.2f}", fontsize=9)
    ax.grid(alpha=0.2)
    fig.tight_layout()
    return fig


def graph_report(graph) -> HtmlReport:
    """Scores, cost, the figure and the most influential kept nodes."""
    summary = graph.summary()
    report = HtmlReport(f"Attribution graph — {graph.model}", f"prompt: {graph.prompt!r}; transcoders: "
                                                              f"{graph.transcoders}")
    targets = ", ".join(f"{t['token']!r} ({t['prob']:.3f})" for t in summary["targets"])
    cost = graph.cost
    report.text(f"Targets: {targets}. {summary['features_explored']} of {summary['active_features']} active features "
                f"explored; {summary['nodes']} nodes, {summary['kept_nodes']} kept after pruning (node threshold "
                f"{graph.config.node_threshold}, edge threshold {graph.config.edge_threshold}). Replacement score "
                f"{graph.scores.get('replacement', 0):.3f}, completeness {graph.scores.get('completeness', 0):.3f} "
                f"(circuit-tracer's definitions). {cost.get('seconds', '?')} s, peak RSS "
                f"{cost.get('peak_rss_gb', '?')} GB (estimated {cost.get('memory_bytes', 0) / 1e9:.2f} GB before the "
                f"run).")
    report.figure(graph_figure(graph), "the pruned graph: tokens at the bottom, logits on top; blue edges excite, "
                                       "red inhibit")
    report.table(["node", "cumulative influence (small: important)", "direct effect on the top logit"],
                 [[t["node"], t["cumulative_influence"], t["direct_to_top_logit"]] for t in summary["top"]])
    if graph.heads:
        report.heading("Head loadings").text(
            "For each of the strongest kept edges, the attention heads that carry it: the part of the edge lost "
            "when the head is removed from the (linear) replacement model. A path through several heads counts for "
            "each.")
        report.table(["source", "target", "edge", "heads (layer.head: loading)"],
                     [[e["source"], e["target"], e["weight"], ", ".join(f"L{layer}.H{h}: {v:+.3f}"
                                                                         for layer, h, v in e["heads"])]
                      for e in graph.heads])
    return report


def replacement_figure(result) -> Figure:
    """Each layer's FVE and L0 of a :class:`ReplacementEval`, CE of the replacement model in the title."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.4))
    a1.bar(result.layers, result.fve, color="tab:green")
    a1.axhline(0, color="black", lw=0.6)
    a1.set(xlabel="layer", ylabel="FVE of the MLP output", title="transcoder FVE per layer")
    a2.bar(result.layers, result.l0, color="tab:blue")
    a2.set(xlabel="layer", ylabel="active features per token", title="L0 per layer")
    fig.suptitle(f"{result.model}: CE {result.ce_orig:.3f} -> {result.ce_replaced:.3f} with every transcoder in place "
                 f"({result.ce_zero:.3f} with those MLPs zeroed): CE recovered {result.ce_recovered:.3f}", fontsize=9)
    fig.tight_layout()
    return fig


def replacement_report(result) -> HtmlReport:
    """The losses, CE recovered and a table of each layer's FVE and L0."""
    report = HtmlReport(f"Transcoders as a replacement model — {result.model}", f"transcoders: {result.source}")
    report.text(f"On {result.tokens:,} held-out positions ({result.config.corpus} {result.config.split}): the model's "
                f"loss {result.ce_orig:.4f}; with every covered MLP's output replaced by its transcoder's prediction "
                f"(from that layer's input in the same run, errors compounding) {result.ce_replaced:.4f}; with those "
                f"MLP outputs zeroed {result.ce_zero:.4f}. CE recovered {result.ce_recovered:.3f}; mean FVE "
                f"{sum(result.fve) / len(result.fve):.3f}.")
    report.figure(replacement_figure(result), "each layer's FVE (of the MLP output, from the clean MLP input) and L0")
    report.table(["layer", "FVE", "L0"], [[la, round(f, 4), round(z, 2)]
                                           for la, f, z in zip(result.layers, result.fve, result.l0)])
    return report


def check_figure(check) -> Figure:
    """Predicted (direct, through the graph) against measured changes of the top logit, one point per feature."""
    fig, ax = plt.subplots(figsize=(5, 4.2))
    real = [r["measured"] for r in check.rows]
    for key, colour, label in (("direct", "tab:blue", "direct edge"), ("total", "tab:orange", "through the graph")):
        ax.scatter([r[key] for r in check.rows], real, s=18, color=colour, label=label)
    ax.scatter([r["measured_replacement"] for r in check.rows], real, s=10, marker="x", color="tab:gray",
               label="replacement model (frozen)")
    values = [v for r in check.rows for v in (r["direct"], r["total"], r["measured"])] or [0.0]
    low, high = min(values), max(values)
    ax.plot([low, high], [low, high], color="black", lw=0.6)
    ax.set(xlabel="predicted change of the top logit", ylabel="measured in the real model",
           title=f"{check.model}: {check.prompt!r} -> {check.target!r}")
    ax.title.set_fontsize(8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def check_report(check) -> HtmlReport:
    """The intervention table and its figure."""
    corr = check.agreement()
    report = HtmlReport(f"Intervention check — {check.model}", f"prompt: {check.prompt!r}; target {check.target!r}")
    report.text(f"Each of the graph's {len(check.rows)} most influential features removed alone (its activation times "
                "its decoder row subtracted from the MLP output at its position). Predicted: the graph's direct edge "
                "to the top logit, and the total through the graph's paths; measured: in the replacement model with "
                "attention, norms and later MLP outputs frozen (must equal the direct edge), and in the real model "
                f"(everything recomputed). Correlation with the real model: direct {_corr(corr['direct'])}, total "
                f"{_corr(corr['total'])}.")
    report.figure(check_figure(check), "predicted against measured; the line is y = x")
    report.table(["feature", "direct edge", "through the graph", "replacement model", "real model"],
                 [[r["node"], round(r["direct"], 4), round(r["total"], 4), round(r["measured_replacement"], 4),
                   round(r["measured"], 4)] for r in check.rows])
    return report


def _corr(value: float | None) -> str:
    return "undefined (fewer than 3 features, or no spread)" if value is None else f"{value:.3f}"
