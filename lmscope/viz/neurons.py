"""Figures and report sections of neuron attribution: top neurons' scores and their activation over the tokens."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from lmscope.viz.lens import show_token
from lmscope.viz.report import HtmlReport, save_figure


def neurons_figure(result, b: int = 0) -> Figure:
    """Prompt ``b``: the top neurons' scores and their activation over the prompt's tokens.

    Bars: each method scaled to its largest score; heat map: each row scaled to its largest magnitude.
    """
    top, tokens = result.top[b], result.tokens[b]
    k, n = len(top), len(tokens)
    labels = [f"L{t['layer']}.{t['neuron']} {show_token(t['vocab'][0], 10)}" for t in top]
    fig, (bars, heat) = plt.subplots(1, 2, figsize=(4 + 0.45 * n + 4, 0.9 + 0.32 * k),
                                     gridspec_kw={"width_ratios": [1, max(1.0, 0.12 * n)]})
    y = np.arange(k)
    for offset, name, colour in ((-0.2, "contribution", "tab:blue"), (0.2, "gradxact", "tab:orange")):
        values = np.array([t[name] if t[name] is not None else np.nan for t in top], dtype=float)
        peak = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 0.0
        if peak > 0:  # all zero (e.g. gradient x activation of last-layer neurons at image patches): no bar to scale
            bars.barh(y + offset, values / peak, height=0.38, color=colour, label=name)
    bars.set_yticks(y, labels, fontsize=7)
    bars.invert_yaxis()
    bars.set_xlabel("score / largest", fontsize=8)
    bars.legend(fontsize=7, loc="lower right")
    acts = result.top_acts[b, :, :n].numpy()  # (k, n)
    scale = np.maximum(np.abs(acts).max(1, keepdims=True), 1e-12)
    im = heat.pcolormesh(acts / scale, cmap="RdBu_r", vmin=-1, vmax=1)
    heat.invert_yaxis()
    heat.set_yticks([])
    heat.set_xticks(np.arange(n) + 0.5, [show_token(t, 10) for t in tokens], rotation=90, fontsize=7)
    heat.set_title("activation over the prompt (row / its largest |value|)", fontsize=8)
    fig.colorbar(im, ax=heat, fraction=0.04, pad=0.02)
    fig.suptitle(f"{result.model}: neurons writing {result.targets[b]!r} after {show_token(tokens[-1], 16)!r} "
                 f"(P = {result.target_prob[b]:.3f})", fontsize=9)
    fig.tight_layout()
    return fig


def plot_neurons(result, path: str | Path, b: int = 0) -> Path:
    """Write :func:`neurons_figure` as PNG."""
    return save_figure(neurons_figure(result, b), path)


def neurons_report(result, report: HtmlReport | None = None) -> HtmlReport:
    """A report section per prompt: target, agreement of the two scores, the top neurons with their vocabulary."""
    report = report or HtmlReport(f"Neurons — {result.model}", f"method: {result.config.method}")
    for b, prompt in enumerate(result.prompts):
        report.heading(f"{prompt!r} → {result.targets[b]!r}")
        report.text(f"P(target) = {result.target_prob[b]:.4f}; Spearman of the two scores over every neuron: "
                    f"{_or_na(result.agreement[b], '.3f')}; top-{result.config.top_k} overlap "
                    f"{_or_na(result.overlap[b], '.2f')}.")
        report.table(["layer", "neuron", "contribution", "rank", "grad x act", "rank", "writes toward", "against"],
                     [[t["layer"], t["neuron"], t["contribution"], t["rank_contribution"], t["gradxact"],
                       t["rank_gradxact"], " ".join(repr(v) for v in t["vocab"][:6]),
                       " ".join(repr(v) for v in t["vocab_bottom"][:4])] for t in result.top[b]])
        report.figure(neurons_figure(result, b))
    for note in result.notes:
        report.text(f"Note: {note}")
    return report


def ablation_report(result, report: HtmlReport) -> HtmlReport:
    """The causal check as a table: the found neurons against random sets of the same size."""
    s = result.summary()
    report.heading(f"Ablation ({result.config.mode}) of the top neurons vs {result.config.random_sets} random sets")
    report.table(["quantity", "found neurons", "random neurons"],
                 [["P(target) drop", s["prob_drop"], s["random_prob_drop"]],
                  ["target still generated", s["generated_after"], s["random_generated"]],
                  ["target still top-1", s["top1_after"], ""]])
    report.text(f"Before ablation: P(target) {s['prob_before']:.4f}, generated {s['generated_before']:.2f}, "
                f"top-1 {s['top1_before']:.2f}.")
    return report


def edit_report(edit, checks: list[dict], report: HtmlReport | None = None) -> HtmlReport:
    """A neuron edit: the contribution before / after and the generations of the checked prompts."""
    report = report or HtmlReport(f"Neuron edit — {edit.model}", f"L{edit.layer}.{edit.neuron}: {edit.v0!r} → "
                                                                  f"{edit.v1!r}")
    report.table(["", f"to {edit.v0!r}", f"to {edit.v1!r}"],
                 [["contribution before", *edit.contribution_before],
                  ["contribution after", *edit.contribution_after]])
    report.text(f"|delta w| = {float(edit.delta.norm()):.4g} after {len(edit.losses)} steps; activation o = "
                f"{edit.activation:.4g}.")
    report.table(["prompt", "kind", "P(v0) before", "after", "P(v1) before", "after", "generated before",
                  "generated after"],
                 [[c["prompt"], c["kind"], c["p_v0"][0], c["p_v0"][1], c["p_v1"][0], c["p_v1"][1], c["text"][0],
                   c["text"][1]] for c in checks])
    return report


def patch_figure(result, image, b: int = 0, neurons: int = 4, top_fraction: float = 0.05) -> Figure:
    """Row ``b``: the image, then one panel per top neuron (its first ``neurons``) over the image patches.

    In each panel the patches where that neuron is most active (its top ``top_fraction``, the paper's 5%) stay
    bright and the rest are dimmed.
    """
    rows, cols = result.grid
    k = min(neurons, len(result.top[b]))
    fig, axes = plt.subplots(1, k + 1, figsize=(2.4 * (k + 1), 2.7))
    picture = np.asarray(image.convert("RGB").resize((cols * 16, rows * 16))) / 255.0
    axes[0].imshow(picture)
    axes[0].set_title(f"→ {result.targets[b]!r}", fontsize=8)
    for j, ax in enumerate(axes[1:]):
        grid = result.patch_map(b, j).float().numpy()  # (rows, cols)
        keep = grid >= np.quantile(grid, 1 - top_fraction)
        mask = np.kron(keep, np.ones((16, 16)))[..., None]
        ax.imshow(picture * (0.25 + 0.75 * mask))
        ax.imshow(np.kron(grid, np.ones((16, 16))), cmap="magma", alpha=0.35)
        t = result.top[b][j]
        ax.set_title(f"L{t['layer']}.{t['neuron']} {show_token(t['vocab'][0], 10)!r}", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{result.model}: top neurons for {result.targets[b]!r}, top {top_fraction:.0%} patches bright",
                 fontsize=9)
    fig.tight_layout()
    return fig


def _or_na(value: float, spec: str) -> str:
    """A number, or "n/a" where it is not defined (NaN: one scoring method only)."""
    return format(value, spec) if value == value else "n/a"
