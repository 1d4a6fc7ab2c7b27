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
        ax.set_title(title, fontsize=9, pad=18)
        ax.set_xlabel("relative depth")
        ax.grid(alpha=0.3)
        _outside(ax)
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
    axes[0].set_title(_lens_label(result), fontsize=9, pad=18)
    axes[1].plot(x, result.locality.mean(1).numpy(), label="mean over heads")
    axes[1].plot(x, result.locality.max(1).values.numpy(), label="max head", ls="--")
    axes[1].set_title(f"attention on the previous {result.config.locality_window} tokens", fontsize=9, pad=18)
    axes[2].plot(x, result.mlp_norm.numpy())
    axes[2].set_title("MLP output norm", fontsize=9, pad=18)
    for kind in ("prediction", "suppression"):
        axes[3].plot(x, result.counts(kind).numpy(), label=kind)
    axes[3].set_title(f"neurons (kurtosis > {result.config.kurtosis_threshold:g})", fontsize=9, pad=18)
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            _outside(ax)
        ax.set_xlabel("relative depth")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _lens_label(result) -> str:
    return getattr(result, "readout", {}).get("label", "logit lens")


def _outside(ax) -> None:
    """The panel's legend above its plot area, not over the data."""
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False, borderaxespad=0.2)


def summary_figure(result) -> Figure:
    """Every measure in its own panel on one shared relative-depth axis (as Lad et al. draw them).

    Panels: relative accuracy and KL after deleting / swapping each block, the lens' KL to the final layer (through
    the readout the result names), attention locality, MLP output norm, prediction / suppression neurons.
    """
    fig, axes = plt.subplots(2, 3, figsize=(12, 6), sharex=True)
    (acc, kl, lens), (local, mlp, neurons) = axes
    for mode, style in (("delete", "-"), ("swap", "--")):
        values = result.lesion[f"{mode}_rel_acc"].numpy()
        acc.plot(_depth(result, len(values)), values, style, marker="o", ms=2.5, label=mode)
        values = result.lesion[f"{mode}_kl"].numpy()
        kl.plot(_depth(result, len(values)), values, style, marker="o", ms=2.5, label=mode)
    acc.set_ylabel("relative top-1 accuracy")
    kl.set_ylabel("KL(P_orig || P_lesioned)")
    kl.set_yscale("log")
    x = _depth(result, result.n_layers)
    lens.plot(x[:-1], result.lens_kl[:-1].clamp_min(1e-4).numpy(), marker="o", ms=2.5, color="tab:purple",
              label=_lens_label(result))  # the last block's output is the model's: KL 0, off a log axis
    lens.set_yscale("log")
    lens.set_ylabel("KL(P_final || P_lens)")
    local.plot(x, result.locality.mean(1).numpy(), label="mean over heads")
    local.plot(x, result.locality.max(1).values.numpy(), "--", label="max head")
    local.set_ylabel(f"attention on previous {result.config.locality_window} tokens")
    mlp.plot(x, result.mlp_norm.numpy(), color="tab:green", label="mean |MLP output|")
    mlp.set_ylabel("MLP output norm")
    for kind in ("prediction", "suppression"):
        neurons.plot(x, result.counts(kind).numpy(), label=kind)
    neurons.set_ylabel(f"neurons (kurtosis > {result.config.kurtosis_threshold:g})")
    for ax in axes.flat:
        _outside(ax)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("relative depth")
    fig.suptitle(f"{result.model}: stages of inference ({result.tokens:,} tokens; lesions from the block deleted or "
                 f"swapped with the next; lens: {_lens_label(result)})", fontsize=10)
    fig.tight_layout()
    return fig


def stages_report(result, report: HtmlReport | None = None) -> HtmlReport:
    """The stages report: summary, lesions, curves, and the top prediction / suppression neurons."""
    report = report or HtmlReport(f"Stages of inference — {result.model}")
    report.heading("Summary").figure(summary_figure(result), "every measure in its own panel, on one relative-depth "
                                                             "axis")
    report.text(f"The lens curves read each block's output through the {_lens_label(result)}"
                + (f" ({result.readout.get('source')}, trained on {result.readout.get('tokens') or '?'} tokens)."
                   if result.readout.get("kind") == "tuned" else
                   " (no tuned lens of this model in the store: 'lmscope lens train' makes one)."))
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
