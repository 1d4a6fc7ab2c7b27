"""Figures and reports for causal traces, in the style of ROME's.

A tokens x layers heatmap per kind with the subject tokens marked, and average-indirect-effect curves per token
group.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from lmscope.viz.lens import show_token
from lmscope.viz.report import HtmlReport, save_figure

CMAPS = {"hidden": "Purples", "mlp": "Greens", "attn": "Reds", "hidden_sever_mlp": "Purples",
         "hidden_sever_attn": "Purples"}
TITLES = {"hidden": "single restored layer", "mlp": "restored MLP window", "attn": "restored attention window",
          "hidden_sever_mlp": "single restored layer, MLP severed", "hidden_sever_attn":
          "single restored layer, attention severed"}


def trace_figure(result, kind: str) -> Figure:
    """ROME's heatmap: rows are tokens (subject tokens starred), columns layers, colour P*_restored[target]."""
    scores = result.scores[kind].numpy()  # (pos, n_layers)
    n_pos, n_layers = scores.shape
    fig, ax = plt.subplots(figsize=(2.0 + 0.17 * n_layers, 0.9 + 0.3 * n_pos))
    im = ax.pcolormesh(scores, cmap=CMAPS.get(kind, "Purples"), vmin=min(result.corrupted_prob, scores.min()))
    ax.invert_yaxis()
    b, e = result.subject_range
    labels = [show_token(t, 14) + ("*" if b <= i < e else "") for i, t in enumerate(result.tokens)]
    ax.set_yticks(np.arange(n_pos) + 0.5, labels, fontsize=8)
    step = max(1, n_layers // 10)
    ax.set_xticks(np.arange(0, n_layers, step) + 0.5, range(0, n_layers, step), fontsize=8)
    window = f" (window {result.config.window})" if kind in ("mlp", "attn") else ""
    ax.set_xlabel(f"layer{window}")
    ax.set_title(f"Impact of restoring states after corrupting the subject: {TITLES.get(kind, kind)}", fontsize=9)
    cbar = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    cbar.set_label(f"p({result.target!r})", fontsize=8)
    return fig


def plot_trace(result, kind: str, path: str | Path) -> Path:
    """Write :func:`trace_figure` as PNG."""
    return save_figure(trace_figure(result, kind), path)


def trace_report(result, report: HtmlReport | None = None) -> HtmlReport:
    """A report section for one trace: the numbers and one heatmap per kind."""
    report = report or HtmlReport(f"Causal trace — {result.model}", f"prompt: {result.prompt!r}")
    report.heading(f"Causal trace: {result.subject!r} -> {result.target!r}")
    report.table(["quantity", "value"], [
        ["P[target], clean", result.clean_prob], ["P*[target], subject corrupted", result.corrupted_prob],
        ["total effect P - P*", result.total_effect], ["noise scale", result.noise],
        ["samples", result.config.samples], ["window (mlp / attn)", result.config.window]])
    for note in result.notes:
        report.text(note)
    for kind in result.scores:
        report.figure(trace_figure(result, kind), f"{TITLES.get(kind, kind)}; subject tokens are starred")
    return report


def aie_figure(result) -> Figure:
    """Average indirect effect per layer, one panel per kind, one line per token group."""
    kinds = list(result.aie)
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for g, group in enumerate(result.groups):
            if result.group_counts[g]:
                ax.plot(result.aie[kind][g].numpy(), label=group, lw=2.2 if group == "last subject token" else 1.2)
        ax.set_title(f"AIE of {TITLES.get(kind, kind)}", fontsize=9)
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("average indirect effect on p(answer)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"{result.model}: {result.n_kept} of {result.n_facts} facts, ATE = {result.ate:.3f}", fontsize=10)
    fig.tight_layout()
    return fig


def aie_report(result, report: HtmlReport | None = None) -> HtmlReport:
    """A report section for a dataset trace: counts, ATE, the peak of each kind at the last subject token."""
    report = report or HtmlReport(f"Causal tracing over facts — {result.model}")
    report.heading("Average indirect effects")
    report.text(f"{result.n_kept} of {result.n_facts} facts are predicted by the model and were traced. "
                f"Average total effect {result.ate:.4f} (P = {result.mean_clean_prob:.4f}, "
                f"P* = {result.mean_corrupted_prob:.4f}).")
    rows = []
    for kind in result.aie:
        for group in ("last subject token", "last token"):
            layer, value = result.peak(kind, group)
            rows.append([kind, group, layer, value])
    report.table(["kind", "token group", "peak layer", "peak AIE"], rows)
    report.figure(aie_figure(result), "average indirect effect per layer and token group")
    return report
