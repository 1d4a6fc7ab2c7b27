"""Figures and the report of a stages analysis, on one relative-depth axis (they only read a StagesResult)."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from lmscope.viz.report import HtmlReport

LESION_TITLES = {"kl": "KL(P_orig || P_lesioned)", "rel_acc": "relative top-1 accuracy",
                 "d_entropy": "entropy change H(P_lesioned) - H(P_orig)"}


def _depth(result, n: int):
    return [i / max(1, result.n_layers - 1) for i in range(n)]


def lesion_figure(result) -> Figure:
    """Deletion and swap of every block: the three lesion metrics against relative depth."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, (metric, title) in zip(axes, LESION_TITLES.items()):
        for mode in ("delete", "swap"):
            values = result.lesion[f"{mode}_{metric}"].numpy()
            ax.plot(_depth(result, len(values)), values, marker="o", ms=3, label=mode)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("relative depth")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{result.model}: layer lesions over {result.tokens} tokens (base accuracy "
                 f"{result.base_accuracy:.3f})", fontsize=10)
    fig.tight_layout()
    return fig


def curves_figure(result) -> Figure:
    """Lens KL / entropy, attention locality, MLP norms and neuron counts per layer."""
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
    x = _depth(result, result.n_layers)
    axes[0].plot(x, result.lens_kl.numpy(), label="KL to final")
    axes[0].plot(x, result.lens_entropy.numpy(), label="entropy")
    axes[0].set_title("logit lens", fontsize=9)
    axes[0].legend(fontsize=8)
    axes[1].plot(x, result.locality.mean(1).numpy(), label="mean over heads")
    axes[1].plot(x, result.locality.max(1).values.numpy(), label="max head", ls="--")
    axes[1].set_title(f"attention on the previous {result.config.locality_window} tokens", fontsize=9)
    axes[1].legend(fontsize=8)
    axes[2].plot(x, result.mlp_norm.numpy())
    axes[2].set_title("MLP output norm", fontsize=9)
    for kind in ("prediction", "suppression"):
        axes[3].plot(x, result.counts(kind).numpy(), label=kind)
    axes[3].set_title(f"neurons (kurtosis > {result.config.kurtosis_threshold:g})", fontsize=9)
    axes[3].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("relative depth")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def summary_figure(result) -> Figure:
    """Every per-layer curve scaled to [0, 1] on one relative-depth axis."""
    curves = {"delete: relative accuracy": result.lesion["delete_rel_acc"],
              "swap: relative accuracy": result.lesion["swap_rel_acc"], "lens KL to final": result.lens_kl,
              "local attention": result.locality.mean(1), "MLP norm": result.mlp_norm,
              "prediction neurons": result.counts("prediction").float(),
              "suppression neurons": result.counts("suppression").float()}
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for label, values in curves.items():
        v = values.float()
        span = float(v.max() - v.min())
        ax.plot(_depth(result, len(v)), ((v - v.min()) / span if span > 0 else v * 0).numpy(), label=label)
    ax.set_xlabel("relative depth")
    ax.set_ylabel("scaled to [0, 1]")
    ax.set_title(f"{result.model}: stages of inference", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def stages_report(result, report: HtmlReport | None = None) -> HtmlReport:
    """The stages report: summary, lesions, curves, and the top prediction / suppression neurons."""
    report = report or HtmlReport(f"Stages of inference — {result.model}")
    report.heading("Summary").figure(summary_figure(result), "all measures on one relative-depth axis")
    report.heading("Layer lesions").figure(lesion_figure(result), "delete block l / swap blocks l and l+1")
    mid = [v for i, v in enumerate(result.lesion["delete_rel_acc"].tolist())
           if 0.25 <= i / max(1, result.n_layers - 1) <= 0.75]
    if mid:
        report.text(f"Relative accuracy after deleting a middle block (relative depth 0.25-0.75): "
                    f"{min(mid):.3f} - {max(mid):.3f}.")
    report.heading("Lens, locality, MLP norms, neurons").figure(curves_figure(result), "per layer")
    report.table(["class", "layer", "neuron", "skew", "kurtosis", "top tokens"],
                 [[n["class"], n["layer"], n["neuron"], n["skew"], n["kurtosis"], " ".join(map(repr, n["tokens"]))]
                  for n in result.top_neurons])
    return report
