"""Figures and reports of the lenses (they only read results).

The lens of one prompt (:class:`~lmscope.methods.lens.LogitLensResult`, through the logit or the tuned lens): the
familiar layer x position grid of top tokens coloured by probability, and KL / entropy per layer. The held-out
comparison (:class:`~lmscope.methods.lens.LensComparison`): KL to the final layer and top-1 agreement per layer
for each readout, as the tuned lens paper's main figure. A tuned lens' training: its KL per layer over the steps.
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


def _title(result) -> str:
    """"Logit lens" or "Tuned lens", from the readout the result records."""
    label = getattr(result, "readout_label", "logit lens")
    return label[0].upper() + label[1:]


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
    ax.set_title(f"{_title(result)}: {result.model}", fontsize=10)
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
    fig.suptitle(f"{_title(result)}: {result.model} — {result.prompt!r}", fontsize=10)
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
    report = HtmlReport(f"{_title(result)} — {result.model}",
                        f"prompt: {result.prompt!r}; top-k = {result.config.top_k}; readout: {result.readout_label}")
    final = result.top_tokens[-1][-1]
    how = ("through the final norm and the unembedding (the logit lens)" if result.readout.get("kind") != "tuned"
           else f"through its tuned lens translator, then the final norm and the unembedding (tuned lens: "
                f"{result.readout.get('source')}, {result.readout.get('tokens') or '?'} training tokens)")
    report.text(f"The model's next token is {final[0]!r} (p = {float(result.top_probs[-1, -1, 0]):.3f}). "
                f"Every row reads one residual stream {how}.")
    report.heading("Top token per layer and position").raw(lens_table_html(result))
    report.figure(lens_grid_figure(result), "top-1 token per (layer, position), coloured by its probability")
    report.figure(lens_curves_figure(result), "KL to the final distribution and entropy, per layer")
    report.heading("Last position, per layer")
    rows = [[label, result.top_tokens[i][-1][0], float(result.top_probs[i, -1, 0]), float(result.kl[i, -1]),
             float(result.entropy[i, -1])] for i, label in enumerate(result.layer_labels)]
    report.table(["layer", "top token", "p", "KL(final || layer)", "entropy"], rows)
    return report


COLOURS = {"logit lens": "tab:blue", "tuned lens": "tab:orange"}


def comparison_figure(result) -> Figure:
    """KL to the final layer (log scale) and top-1 agreement per residual stream, one line per readout."""
    x = np.arange(len(result.layer_labels))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for j, label in enumerate(result.readouts):
        style = {"color": COLOURS.get(label), "marker": "o", "ms": 3, "label": label}
        axes[0].plot(x[:-1], result.kl[j, :-1].clamp_min(1e-4).numpy(), **style)
        axes[1].plot(x, result.top1[j].numpy(), **style)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("KL(P_final || P_lens) [nats]")
    axes[1].set_ylabel("top-1 agreement with the model")
    axes[1].set_ylim(0, 1.02)
    step = max(1, len(x) // 12)
    for ax in axes:
        ax.set_xticks(x[::step], [result.layer_labels[i] for i in x[::step]], fontsize=7)
        ax.set_xlabel("residual stream (embed = h^0; l = output of block l)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(f"{result.model}: logit vs tuned lens on {result.positions:,} held-out positions", fontsize=10)
    fig.tight_layout()
    return fig


def comparison_report(result) -> HtmlReport:
    """The comparison figure, what it shows in words, and the per-layer table."""
    report = HtmlReport(f"Logit vs tuned lens — {result.model}",
                        f"{result.positions:,} held-out positions of {result.config.corpus} ({result.config.split})")
    mean = result.summary()["mean_kl"]
    worse = result.worse_rows() if len(result.readouts) > 1 else []
    report.text("Mean KL over the layers: " + "; ".join(f"{k} {v:.3f} nats" for k, v in mean.items()) + ". "
                + ("The tuned lens has the lower KL at every layer but the last (the model's output, where both are "
                   "exact)." if not worse else f"The tuned lens does not beat the logit lens at layer(s) "
                                               f"{', '.join(worse)}."))
    if result.lens:
        report.text(f"Tuned lens: {result.lens.get('source')}, trained on {result.lens.get('tokens') or '?'} tokens "
                    f"in {result.lens.get('steps') or '?'} steps.")
    report.figure(comparison_figure(result), "KL to the final distribution and top-1 agreement, per layer")
    heads = [f"{what} {r}" for what in ("KL", "top-1") for r in result.readouts]
    rows = [[label, *(float(result.kl[j, i]) for j in range(len(result.readouts))),
             *(float(result.top1[j, i]) for j in range(len(result.readouts)))]
            for i, label in enumerate(result.layer_labels)]
    report.table(["layer", *heads], rows)
    return report


def training_figure(lens) -> Figure:
    """Training KL of every translator over the steps (colour: depth)."""
    history = np.array(lens.training.get("history") or [[0.0]])  # (steps, layers)
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    cmap = colormaps["viridis"]
    for i in range(history.shape[1]):
        ax.plot(np.arange(1, len(history) + 1), history[:, i], color=cmap(i / max(1, history.shape[1] - 1)), lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training KL [nats]")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, history.shape[1] - 1))
    fig.colorbar(sm, ax=ax, label="residual stream (0 = embeddings)")
    ax.set_title(f"Tuned lens of {lens.model}: {lens.training.get('tokens', 0):,} tokens, "
                 f"{lens.training.get('seconds', 0):.0f} s", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def training_report(lens) -> HtmlReport:
    """The training curves and the settings."""
    t = lens.training
    report = HtmlReport(f"Tuned lens — {lens.model}", f"{t.get('tokens', 0):,} tokens, {t.get('steps')} steps, "
                                                      f"{t.get('seconds', 0):.0f} s")
    report.figure(training_figure(lens), "training KL of every translator")
    shrink = t.get("shrink") or {}
    if shrink:
        report.text(f"After training, each translator was shrunk towards the identity, h + a (W h + b), with the a "
                    f"of the lowest KL on {shrink['positions']:,} held-out positions of the training split.")
        report.table(["layer", "part kept (a)", "held-out KL, identity (a = 0)", "held-out KL, trained (a = 1)"],
                     [[n, f"{a:g}", f"{kl[0]:.3f}", f"{kl[-1]:.3f}"]
                      for n, a, kl in zip(shrink["layers"], shrink["alpha"], shrink["kl"])])
    report.table(["setting", "value"], [[k, str(v)] for k, v in (t.get("config") or {}).items()])
    return report
