"""The comparison of Cunningham et al.'s figure: explanation scores of SAE features against the baselines."""

from __future__ import annotations

import html

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from lmscope.viz.report import HtmlReport


def scores_figure(result) -> Figure:
    """Box plots of the simulation score (and detection AUROC) per unit kind, the means with 95% intervals."""
    summary = result.summary()["kinds"]
    kinds = list(summary)
    panels = [("score", "explanation score (simulated vs true, r)")]
    if any(result.scores(k, "detection") for k in kinds):
        panels.append(("detection", "detection AUROC (top vs random)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(1.2 + 1.3 * len(kinds) * len(panels), 3.6), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        data = [result.scores(k, key) or [np.nan] for k in kinds]
        ax.boxplot(data, showfliers=False)
        for i, values in enumerate(data, 1):
            ax.scatter(np.full(len(values), i) + np.linspace(-0.12, 0.12, len(values)), values, s=6, alpha=0.5)
        if key == "score":
            means = [summary[k]["mean_score"] for k in kinds]
            ci = [summary[k]["ci95"] if summary[k]["ci95"][0] is not None else [m, m] for k, m in zip(kinds, means)]
            lo = [m - c[0] if m is not None else 0 for c, m in zip(ci, means)]
            hi = [c[1] - m if m is not None else 0 for c, m in zip(ci, means)]
            ax.errorbar(range(1, len(kinds) + 1), [m if m is not None else np.nan for m in means],
                        yerr=np.nan_to_num([lo, hi]), fmt="D", color="black", capsize=4, label="mean, 95% CI")
            ax.legend(fontsize=7)
        ax.set_xticks(range(1, len(kinds) + 1), [f"{k}\n(n={summary[k]['scored']})" for k in kinds], fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{result.model}: explainer {result.explainer}, simulator {result.simulator}", fontsize=9)
    fig.tight_layout()
    return fig


def autointerp_report(result, report: HtmlReport | None = None, examples: int = 12) -> HtmlReport:
    """The per-kind table, the figure, and the best-scored explanations of each kind."""
    s = result.summary()
    report = report or HtmlReport(f"Autointerpretability — {result.model}")
    report.heading("Explanation scores by unit kind")
    report.table(["kind", "site", "units", "scored", "mean score", "95% CI", "mean detection", "malformed answers"],
                 [[k, s["sites"].get(k, ""), v["units"], v["scored"], v["mean_score"],
                   "[{:.3f}, {:.3f}]".format(*v["ci95"]) if v["scored"] > 1 else "", v["mean_detection"],
                   v["malformed"]] for k, v in s["kinds"].items()])
    report.figure(scores_figure(result), "each dot is one unit; the diamond is the mean with its bootstrap 95% CI")
    for kind in s["kinds"]:
        rows = sorted((r for r in result.records if r["kind"] == kind and r.get("score") is not None),
                      key=lambda r: -r["score"])[:examples]
        report.table([f"{kind} unit", "score", "explanation"],
                     [[r["unit"], r["score"], html.escape(r["explanation"])] for r in rows])
    return report
