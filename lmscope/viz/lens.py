"""Figures and report for :class:`~lmscope.methods.lens.LogitLensResult`.

The familiar layer x position grid of top tokens coloured by probability, and KL / entropy per layer.
"""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from lmscope.viz.report import HtmlReport, save_figure


def show_token(token: str, width: int = 10) -> str:
    """A token made visible for a plot: spaces as '␣', newlines as '⏎', cut to ``width`` characters."""
    shown = token.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥")
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def _positions(result, max_positions: int) -> range:
    n = len(result.tokens)
    return range(max(0, n - max_positions), n)


def lens_grid_figure(result, max_positions: int = 16) -> Figure:
    """The grid of top-1 tokens, coloured by their probability.

    Rows: residual streams (embeddings at the bottom, the output at the top); columns: the last ``max_positions``
    positions, labelled by the input token.
    """
    cols = _positions(result, max_positions)
    probs = result.top_probs[:, cols.start:cols.stop, 0].numpy()  # (rows, pos)
    n_rows = result.n_rows
    fig, ax = plt.subplots(figsize=(1.3 + 1.05 * len(cols), 1.2 + 0.24 * n_rows))
    im = ax.imshow(probs, origin="lower", aspect="auto", cmap="Blues", vmin=0.0, vmax=1.0)
    for r in range(n_rows):
        for j, p in enumerate(cols):
            ax.text(j, r, show_token(result.top_tokens[r][p][0]), ha="center", va="center", fontsize=6.5,
                    color="white" if probs[r, j] > 0.55 else "black")
    ax.set_xticks(range(len(cols)), [show_token(result.tokens[p], 12) for p in cols], rotation=45, ha="right",
                  fontsize=8)
    ax.set_yticks(range(n_rows), result.layer_labels, fontsize=7)
    ax.set_xlabel("input token (the cell is the prediction for the token after it)")
    ax.set_ylabel("residual stream read (embed = h^0; l = output of block l)")
    ax.set_title(f"Logit lens: {result.model}", fontsize=10)
    fig.colorbar(im, ax=ax, label="top-1 probability", fraction=0.04, pad=0.02)
    return fig


def lens_curves_figure(result) -> Figure:
    """KL(final || layer) and entropy per residual stream, at the last position and averaged over positions."""
    x = np.arange(result.n_rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, values, name in ((axes[0], result.kl, "KL(P_final || P_layer) [nats]"),
                             (axes[1], result.entropy, "entropy of P_layer [nats]")):
        ax.plot(x, values[:, -1].numpy(), marker="o", ms=3, label="last position")
        ax.plot(x, values.mean(1).numpy(), marker="s", ms=3, alpha=0.7, label="mean over positions")
        ax.set_xlabel("residual stream (0 = embeddings, l + 1 = after block l)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("symlog", linthresh=1.0)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Logit lens: {result.model} — {result.prompt!r}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_lens_grid(result, path: str | Path, max_positions: int = 16) -> Path:
    """Write :func:`lens_grid_figure` as PNG."""
    return save_figure(lens_grid_figure(result, max_positions), path)


def plot_lens_curves(result, path: str | Path) -> Path:
    """Write :func:`lens_curves_figure` as PNG."""
    return save_figure(lens_curves_figure(result), path)


def lens_table_html(result, max_positions: int = 16, tooltip_k: int = 5) -> str:
    """The grid as an HTML table (top row = output); hovering a cell shows its top-k tokens with probabilities."""
    cols = _positions(result, max_positions)
    cmap = colormaps["Blues"]
    head = "".join(f'<th class="tok">{html.escape(show_token(result.tokens[p], 14))}</th>' for p in cols)
    rows = []
    for r in reversed(range(result.n_rows)):
        cells = []
        for p in cols:
            p1 = float(result.top_probs[r, p, 0])
            tip = "\n".join(f"{t!r}: {float(q):.3f}" for t, q in
                            zip(result.top_tokens[r][p][:tooltip_k], result.top_probs[r, p, :tooltip_k]))
            fg = "white" if p1 > 0.55 else "black"
            cells.append(f'<td class="tok" title="{html.escape(tip)}" style="background:{to_hex(cmap(p1))};'
                         f'color:{fg}">{html.escape(show_token(result.top_tokens[r][p][0]))}</td>')
        rows.append(f"<tr><th>{html.escape(result.layer_labels[r])}</th>{''.join(cells)}</tr>")
    return f"<table><thead><tr><th>layer</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def lens_report(result) -> HtmlReport:
    """A self-contained report: summary, the interactive table, both figures and the per-layer numbers."""
    report = HtmlReport(f"Logit lens — {result.model}", f"prompt: {result.prompt!r}; top-k = {result.config.top_k}")
    final = result.top_tokens[-1][-1]
    report.text(f"The model's next token is {final[0]!r} (p = {float(result.top_probs[-1, -1, 0]):.3f}). "
                f"Every row reads one residual stream through the final norm and the unembedding.")
    report.heading("Top token per layer and position").raw(lens_table_html(result))
    report.figure(lens_grid_figure(result), "top-1 token per (layer, position), coloured by its probability")
    report.figure(lens_curves_figure(result), "KL to the final distribution and entropy, per layer")
    report.heading("Last position, per layer")
    rows = [[label, result.top_tokens[i][-1][0], float(result.top_probs[i, -1, 0]), float(result.kl[i, -1]),
             float(result.entropy[i, -1])] for i, label in enumerate(result.layer_labels)]
    report.table(["layer", "top token", "p", "KL(final || layer)", "entropy"], rows)
    return report
