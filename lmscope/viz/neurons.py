"""Figures and report sections of neuron attribution: top neurons' scores and their activation over the tokens."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from lmscope.errors import ConfigError
from lmscope.viz.lens import show_token
from lmscope.viz.report import HtmlReport, save_figure


def neurons_figure(result, b: int = 0) -> Figure:
    """Prompt ``b``: the top neurons' scores and their activation over the prompt's tokens.

    Bars: each method scaled to its largest score; heat map: each row scaled to its largest magnitude, at most
    :data:`MAX_HEAT_WIDTH` inches wide, a run of image tokens labelled once (:func:`token_ticks`).
    """
    top, tokens = result.top[b], result.tokens[b]
    k, n = len(top), len(tokens)
    labels = [f"L{t['layer']}.{t['neuron']} {show_token(t['vocab'][0], 10)}" for t in top]
    fig, (bars, heat) = plt.subplots(1, 2, figsize=(6 + min(0.3 * n, MAX_HEAT_WIDTH), 0.9 + 0.32 * k),
                                     gridspec_kw={"width_ratios": [1, min(max(1.0, 0.12 * n), 2.5)]})
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
    ticks = token_ticks(tokens)
    heat.set_xticks([i + 0.5 for i, _ in ticks], [label for _, label in ticks], rotation=90, fontsize=7)
    heat.set_title("activation over the prompt (row / its largest |value|)", fontsize=8)
    fig.colorbar(im, ax=heat, fraction=0.04, pad=0.02)
    fig.suptitle(f"{result.model}: neurons writing {result.targets[b]!r} after {show_token(tokens[-1], 16)!r} "
                 f"(P = {result.target_prob[b]:.3f})", fontsize=9)
    fig.tight_layout()
    return fig


MAX_HEAT_WIDTH = 6.0  # inches of the heat map over the prompt, however many tokens (an image is 64 or more)
MAX_TICKS = 40  # token labels under the heat map at most


def token_ticks(tokens: list[str], most: int = MAX_TICKS) -> list[tuple[int, str]]:
    """(position, label) of the heat map's token labels, at most ``most`` (every n-th kept, the last always).

    A run of one repeated token (the image tokens) is labelled once, at its start, as "token xN".
    """
    ticks, start = [], 0
    while start < len(tokens):
        end = start
        while end < len(tokens) and tokens[end] == tokens[start]:
            end += 1
        run = end - start
        label = show_token(tokens[start], 10)
        ticks += [(start, f"{label} x{run}")] if run > 2 else [(i, label) for i in range(start, end)]
        start = end
    step = math.ceil(len(ticks) / most)
    return ticks if step <= 1 else list(dict.fromkeys(ticks[::step][: most - 1] + [ticks[-1]]))


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
        if result.top_image:
            report.text(f"Above: ranked by {result.rankings()['top']}. Listed apart, the neurons of the patch maps, "
                        f"ranked by {result.rankings()['top_image']}; gradients are of {result.gradient}.")
            report.table(["layer", "neuron", "grad x act (image)", "rank", "contribution", "rank", "writes toward"],
                         [[t["layer"], t["neuron"], t["gradxact"], t["rank_gradxact"], t["contribution"],
                           t["rank_contribution"], " ".join(repr(v) for v in t["vocab"][:6])]
                          for t in result.top_image[b]])
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


def patch_figure(result, image, b: int = 0, neurons: int = 4, top_fraction: float = 0.05, layout=None,
                 caption: str | None = None, occlusion=None) -> Figure:
    """Row ``b``: the image, then the patch maps of its first ``neurons`` of ``result.top_image``.

    Neurons ranked by gradient x activation (of the word's logit) summed over the image tokens; each panel is the
    neuron's activation over the patches on one colour scale for the whole figure (one colour bar), its top
    ``top_fraction`` patches (the paper's 5%) outlined, the image at its own aspect ratio (padded to a square, not
    squashed). ``layout``: the row's :class:`~lmscope.model.vlm_layouts.TokenLayout` (image_token_layout(lm,
    inputs)[b]) to place the tokens; default ``result.grid`` over the image, as the model's processor squashed it.
    ``caption``: the full caption, shown in the title with the text fed before the word; ``occlusion``: an
    :class:`~lmscope.methods.neurons.result.OcclusionResult` of row ``b``, whose numbers each panel shows.
    """
    if not result.top_image:
        raise ConfigError("patch maps draw the neurons ranked by gradient x activation over the image: score with "
                          f"method gradxact or both (this result: {result.config.method})")
    k = min(neurons, len(result.top_image[b]))
    maps = [_painted(result, b, j, layout) for j in range(k)]  # (array (h, w), boxes (n, 4), values (n,)) each
    low, high = _shared_scale([m[0] for m in maps])
    fig, axes = plt.subplots(1, k + 1, figsize=(2.5 * (k + 1) + 0.8, 3.3), layout="constrained")
    width, height = image.size
    picture = np.asarray(image.convert("RGB"))
    _image_panel(axes[0], picture, result, b, occlusion)
    for j, (ax, (array, boxes, values)) in enumerate(zip(axes[1:], maps)):
        ax.imshow(picture, extent=(0, width, height, 0))
        ax.imshow(array, extent=(0, width, height, 0), cmap="magma", vmin=low, vmax=high, alpha=0.6,
                  interpolation="nearest")
        _outline(ax, boxes, values, top_fraction, (width / array.shape[1], height / array.shape[0]))
        ax.set_title(_panel_title(result.top_image[b][j], occlusion, j), fontsize=8)
    for ax in axes:
        _pad_square(ax, width, height)
    scale = ScalarMappable(Normalize(low, high), "magma")  # the one scale of every panel
    fig.colorbar(scale, ax=list(axes[1:]), fraction=0.03, pad=0.02, label="activation at the patch (MLP key)")
    fig.suptitle(_patch_title(result, b, caption, top_fraction), fontsize=8)
    return fig


def _painted(result, b: int, j: int, layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(map (h, w) over the image, token boxes (n, 4) in the map's pixels, values (n,)) of neuron j of top_image."""
    rows, cols = result.grid
    n = rows * cols if layout is None else layout.frame.numel()
    values = result.image_acts[b, j, :n].float()  # (n,)
    if layout is None:
        r, c = np.divmod(np.arange(n), cols)
        return values.view(rows, cols).numpy(), np.stack([c, r, c + 1, r + 1], 1).astype(float), values.numpy()
    from lmscope.model.vlm_layouts import paint

    return paint(values, layout).float().numpy(), layout.box.numpy(), values.numpy()


def _shared_scale(arrays: list[np.ndarray]) -> tuple[float, float]:
    """(low, high) over every map of the figure (finite values only); a constant map gets a unit-free tiny span."""
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays]) if arrays else np.zeros(1)
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    return (low, high) if high > low else (low - 0.5, low + 0.5)


def _outline(ax, boxes: np.ndarray, values: np.ndarray, top_fraction: float, scale: tuple[float, float]) -> None:
    """Outline the top ``top_fraction`` tokens' boxes (scaled from map pixels to image pixels)."""
    from matplotlib.patches import Rectangle

    shown = np.isfinite(boxes).all(1) & np.isfinite(values)
    count = max(1, math.ceil(top_fraction * int(shown.sum())))
    for i in np.argsort(-np.where(shown, values, -np.inf))[:count]:
        x0, y0, x1, y1 = boxes[i] * np.array([scale[0], scale[1], scale[0], scale[1]])
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="cyan", linewidth=1.2))


def _pad_square(ax, width: int, height: int) -> None:
    """Show the image at its aspect ratio, padded (not squashed) to a square panel."""
    side = max(width, height)
    dx, dy = (side - width) / 2, (side - height) / 2
    ax.set_xlim(-dx, width + dx)
    ax.set_ylim(height + dy, -dy)
    ax.set_aspect("equal")
    ax.set_facecolor("0.92")
    ax.set_xticks([])
    ax.set_yticks([])


def _image_panel(ax, picture: np.ndarray, result, b: int, occlusion) -> None:
    """The image itself, titled with P(word) (and P(word) on a blank image, the occlusion's control)."""
    height, width = picture.shape[:2]
    ax.imshow(picture, extent=(0, width, height, 0))
    title = f"P({result.targets[b]!r}) = {result.target_prob[b]:.3f}"
    if occlusion is not None:
        title += f"\nblank image: {occlusion.prob_blank:.3f}"
    ax.set_title(title, fontsize=8)


def _panel_title(top: dict, occlusion, j: int) -> str:
    """L<layer>.<neuron> and its score; with an occlusion check, the drop of P(word) against random patches."""
    title = f"L{top['layer']}.{top['neuron']}  g = {top['gradxact']:.3g}"
    if occlusion is not None and j < len(occlusion.prob_top) and occlusion.neurons[j] == [top["layer"],
                                                                                            top["neuron"]]:
        title += (f"\ncover top {occlusion.patches}: ΔP {-occlusion.drops()[j]:+.3f}\n"
                  f"{occlusion.patches} random: ΔP {-occlusion.random_drop():+.3f}")
    return title


def _patch_title(result, b: int, caption: str | None, top_fraction: float) -> str:
    """The figure's title: the caption, the text fed before the word, and what the panels show."""
    prefix = result.prefixes[b] if result.prefixes else result.prompts[b]
    lines = [f"{result.model}" + (f": caption {caption!r}" if caption else ""),
             f"{'' if '<image>' in prefix else 'image + '}{prefix!r} -> {result.targets[b]!r}",
             f"neurons by gradient x activation of the word's logit summed over the image tokens; top "
             f"{top_fraction:.0%} patches outlined"]
    if not any(t["gradxact"] for t in result.top_image[b]):
        lines.append("every score is 0: no scored neuron has a path from the patches to the word")
    return "\n".join(textwrap.fill(line, 110) for line in lines)


def _or_na(value: float, spec: str) -> str:
    """A number, or "n/a" where it is not defined (NaN: one scoring method only)."""
    return format(value, spec) if value == value else "n/a"
