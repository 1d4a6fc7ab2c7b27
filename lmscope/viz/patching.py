"""Heat maps of patching results: layers x positions per stream kind, layers x heads for heads."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from lmscope.viz.lens import show_token
from lmscope.viz.report import HtmlReport, save_figure

TITLES = {"resid_pre": "residual stream (block input)", "resid_post": "residual stream (block output)",
          "attn_out": "attention output", "mlp_out": "MLP output", "heads": "attention heads (all positions)"}


def patching_figure(result) -> Figure:
    """One panel per kind; colour = normalised metric (0 corrupted, 1 clean), diverging around 0."""
    kinds = list(result.scores)
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.6 * len(kinds), 0.9 + 0.22 * result.scores[kinds[0]].shape[0]),
                             squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        s = result.scores[kind].numpy()  # (n_layers, cols)
        bound = max(1.0, float(np.nanmax(np.abs(s))) if np.isfinite(s).any() else 1.0)
        im = ax.pcolormesh(s, cmap="RdBu_r", vmin=-bound, vmax=bound)
        ax.invert_yaxis()
        ax.set_ylabel("layer")
        if kind == "heads":
            ax.set_xlabel("head")
        else:
            ax.set_xticks(np.arange(len(result.tokens)) + 0.5, [show_token(t, 10) for t in result.tokens],
                          rotation=90, fontsize=7)
        ax.set_title(TITLES.get(kind, kind), fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    fig.suptitle(f"{result.model}: {result.method} patching, clean -> corrupted "
                 f"(metric {result.clean_metric:.3g} clean, {result.corrupted_metric:.3g} corrupted)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_patching(result, path: str | Path) -> Path:
    """Write :func:`patching_figure` as PNG."""
    return save_figure(patching_figure(result), path)


def patching_report(result, report: HtmlReport | None = None) -> HtmlReport:
    """A report section: the prompts, both metrics, the best cell of each kind and the heat maps."""
    report = report or HtmlReport(f"Activation patching — {result.model}", f"clean: {result.clean!r}")
    report.heading(f"{result.method.capitalize()} patching")
    report.table(["quantity", "value"], [["clean prompt", result.clean], ["corrupted prompt", result.corrupted],
                                         ["metric, clean", result.clean_metric],
                                         ["metric, corrupted", result.corrupted_metric]])
    best = result.summary()["best"]
    report.table(["kind", "layer", "position / head", "score"],
                 [[k, b["layer"], b.get("token", b.get("head")), b["score"]] for k, b in best.items()])
    report.figure(patching_figure(result), "0 = corrupted run, 1 = clean run")
    return report


def ioi_figure(result) -> Figure:
    """The sparsity claim: share of the summed |effects| reached by the top-k units of each basis; top mean effects.

    Left panel: cumulative share, largest |effect| first (mean over pairs). Right: the ten largest mean effects.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for basis, effects in result.exact.items():
        mags = effects.abs().sort(dim=1, descending=True).values
        share = (mags.cumsum(1) / mags.sum(1, keepdim=True).clamp_min(1e-12)).mean(0).numpy()
        k = np.arange(1, len(share) + 1)
        half = float(result.half_count(basis).float().median())
        left.plot(k, share, label=f"{basis} ({result.sites[basis]}; half at {half:g})")
        top = [r["mean_effect"] for r in result.ranking(basis, 10)]
        right.plot(range(1, len(top) + 1), np.abs(top), "o-", label=basis)
    left.axhline(0.5, color="grey", lw=0.8, ls="--")
    left.set_xscale("log")
    left.set_xlabel("units, largest |effect| first")
    left.set_ylabel("share of summed |effect| (mean over pairs)")
    left.legend(fontsize=7)
    right.set_xlabel("rank")
    right.set_ylabel("|mean effect| / total effect")
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(f"{result.model}: single-unit patching on IOI ({len(result.cases)} pairs, position "
                 f"{result.config.position})", fontsize=10)
    fig.tight_layout()
    return fig


def ioi_report(result, report: HtmlReport | None = None) -> HtmlReport:
    """The counts, the sparsity comparison, the top units of each basis and the attribution agreement."""
    s = result.summary()
    report = report or HtmlReport(f"IOI features — {result.model}")
    report.heading("Causal feature identification on IOI")
    report.table(["quantity", "value"], [["pairs", s["n_pairs"]], ["logit(IO) > logit(S)", s["n_correct"]],
                                         ["IO is the top-1 token", s["n_top1"]], ["pairs patched", s["n_used"]],
                                         ["mean total effect (logit diff)", s["mean_total_effect"]]])
    report.table(["basis", "site", "units", "changed per pair", "units for half the effect (median)",
                  "attribution vs exact r"],
                 [[b, v["site"], v["units"], v["changed_per_pair"], v["half_effect_units_median"],
                   v["attribution_vs_exact_r"]] for b, v in s["bases"].items()])
    for b, v in s["bases"].items():
        report.table([f"{b} unit", "mean effect / total", "pairs where it changed"],
                     [[r["unit"], r["mean_effect"], r["pairs"]] for r in v["top"]])
    report.figure(ioi_figure(result), "effects are normalised by each pair's clean - corrupted logit difference")
    return report
