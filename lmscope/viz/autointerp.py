"""The comparison of Cunningham et al.'s figure: explanation scores of SAE features against the baselines and controls.

One panel per scorer (simulation r, detection AUROC, fuzzing AUROC), unit kinds side by side, the planted and random
controls drawn in their own colours, chance marked; the report adds the controls' verdict, how many explanations are
distinct, and ten examples per kind from the best, the middle and the worst.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from lmscope.viz.report import HtmlReport

PANELS = {"simulation": ("score", "simulation (simulated vs true, r)", 0.0),
          "detection": ("detection", "detection AUROC", 0.5),
          "fuzzing": ("fuzzing", "fuzzing AUROC", 0.5)}  # scorer -> record key, axis label, chance
COLOURS = {"planted": "tab:green", "random": "tab:gray"}  # the controls; studied kinds are blue


def scores_figure(result) -> Figure:
    """Each scorer's scores per unit kind: boxes, one dot per unit, the mean with its 95% interval, chance dashed."""
    full = result.summary()
    summary = full["kinds"]
    kinds = list(summary)
    panels = [name for name, (key, _, _) in PANELS.items() if any(result.scores(k, key) for k in kinds)]
    panels = panels or ["simulation"]
    fig, axes = plt.subplots(1, len(panels), figsize=(1.0 + 1.1 * max(len(kinds), 3) * len(panels), 3.8),
                             squeeze=False)
    for ax, name in zip(axes[0], panels):
        _panel(ax, result, summary, kinds, name, full["controls"].get("planted_min"))
    progress = full.get("progress")
    unfinished = f"; unfinished: {progress['scored']} of up to {progress['planned']} units" if progress else ""
    fig.suptitle(f"{result.model}: explainer {result.explainer}, scorer {result.simulator} "
                 f"(green: planted units, known meaning; grey: random directions){unfinished}", fontsize=8)
    fig.tight_layout()
    return fig


def _panel(ax, result, summary: dict, kinds: list[str], name: str, bar: float | None) -> None:
    key, label, chance = PANELS[name]
    x = np.arange(1, len(kinds) + 1)
    data = [result.scores(k, key) or [np.nan] for k in kinds]
    ax.boxplot(data, showfliers=False, widths=0.55)
    for i, (kind, values) in enumerate(zip(kinds, data), 1):
        jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(1)
        ax.scatter(i + jitter, values, s=7, alpha=0.55, color=COLOURS.get(kind, "tab:blue"))
    rows = [summary[k]["scorers"][name] for k in kinds]
    means = np.array([r["mean"] if r["mean"] is not None else np.nan for r in rows], dtype=float)
    lo = [m - r["ci95"][0] if r["ci95"][0] is not None else 0.0 for m, r in zip(means, rows)]
    hi = [r["ci95"][1] - m if r["ci95"][1] is not None else 0.0 for m, r in zip(means, rows)]
    ax.errorbar(x, means, yerr=np.nan_to_num([lo, hi]), fmt="D", color="black", capsize=4, label="mean, 95% CI")
    ax.axhline(chance, color="tab:red", lw=0.8, ls="--", label=f"chance ({chance:g})")
    if name == "detection" and "planted" in kinds and bar is not None:
        ax.axhline(bar, color="tab:green", lw=0.8, ls=":", label=f"planted units' bar ({bar:g})")
    ax.set_xticks(x, [f"{k}\n(n={r['n']})" for k, r in zip(kinds, rows)], fontsize=8)
    ax.set_ylabel(label, fontsize=8)
    ax.set_ylim(-0.45 if key == "score" else 0.0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, loc="lower right")


def scorer_cell(row: dict) -> str:
    """One scorer's summary row as text: mean [95% CI] and, for detection and fuzzing, the balanced accuracy."""
    if row["mean"] is None:
        return "–"
    ci = "" if row["n"] < 2 or row["ci95"][0] is None else " [{:.2f}, {:.2f}]".format(*row["ci95"])
    acc = f"; acc {row['accuracy']:.2f}" if row.get("accuracy") is not None else ""
    return f"{row['mean']:.3f}{ci}{acc}"


def controls_text(controls: dict) -> str:
    """The two controls' verdicts in words, each mean with its 95% interval (a narrow verdict said so)."""
    def verdict(ok, good: str, bad: str) -> str:
        return "not run" if ok is None else (good if ok else bad)

    def value(mean, ci) -> str:
        if mean is None:
            return "–"
        return f"{mean:.3f}" + ("" if not ci or ci[0] is None else " [{:.2f}, {:.2f}]".format(*ci))

    def narrow(ok, ci, passes) -> str:  # an end of the interval disagrees with the verdict
        ends = [v for v in ci or () if v is not None]
        return " Narrowly: its 95% interval crosses the bar." if ok is not None and any(
            passes(v) != ok for v in ends) else ""

    planted, random = controls["planted"]["detection"], controls["random"]["detection"]
    p_ci, r_ci = controls.get("planted_ci"), controls.get("random_ci")
    bar, band = controls.get("planted_min", 0.85), controls.get("random_band", 0.1)
    return ("Positive control, planted units (indicators of a known token set): mean detection AUROC "
            f"{value(planted, p_ci)} — "
            + verdict(controls["planted_ok"], "at least 0.85: the pipeline can read a meaning that is there.",
                      "below 0.85: the pipeline, not the units, fails; the other kinds' scores mean little.")
            + narrow(controls["planted_ok"], p_ci, lambda v: v >= bar)
            + " Negative control, random directions: mean detection AUROC "
            f"{value(random, r_ci)} — "
            + verdict(controls["random_ok"], "within 0.5 ± 0.1, as noise should be.",
                      "outside 0.5 ± 0.1: the scorer rewards something other than the explanation.")
            + narrow(controls["random_ok"], r_ci, lambda v: abs(v - 0.5) <= band))


def example_units(result, kind: str, n: int) -> list[dict]:
    """Up to ``n`` scored units of a kind: the best, the middle and the worst by detection (else simulation)."""
    key = "detection" if result.scores(kind, "detection") else "score"
    rows = sorted((r for r in result.records if r["kind"] == kind and r.get(key) is not None),
                  key=lambda r: -r[key])
    if len(rows) <= n:
        return rows
    best, worst = n - 2 * (n // 3), n // 3
    mid = len(rows) // 2 - (n // 3) // 2
    picks = rows[:best] + rows[mid:mid + n // 3] + rows[len(rows) - worst:]
    return list({id(r): r for r in picks}.values())


def progress_text(progress: dict | None) -> str:
    """'' for a finished run; else how many units an unfinished run has scored, per kind, and what that means."""
    if not progress:
        return ""
    kinds = ", ".join(f"{k} {n}/{m}" for k, (n, m) in progress["by_kind"].items())
    return (f"Unfinished run: {progress['scored']} of up to {progress['planned']} units scored so far ({kinds}). "
            "Every number here is of those units alone and will move as the run goes on.")


def timing_text(timing: dict) -> str:
    """The run's wall time in words: seconds a unit per stage, units an hour, and where the units were scored."""
    if not timing or not timing.get("units"):
        return "Time: no unit of this run was timed."
    stages = ", ".join(f"{name} {s:.1f} s" for name, s in timing["stages"].items())
    hour = f"{timing['units_per_hour']:.0f} units an hour with every scorer"
    if timing.get("units_per_hour_without_simulation") and "simulation" in timing["stages"]:
        hour += f", {timing['units_per_hour_without_simulation']:.0f} with explain, detection and fuzzing alone"
    machines = timing.get("by_machine") or {m: {"units": n} for m, n in timing["scored_on"].items()}
    where = "; ".join(f"{m or 'unnamed'} ({v['units']} units" + (
        f", {v['seconds_per_unit']:.1f} s a unit)" if len(machines) > 1 and v.get("seconds_per_unit") else ")")
        for m, v in machines.items())
    wall = timing.get("wall")
    together = "" if not wall or not wall.get("units_per_hour") else (
        f" In wall time, with whatever ran at once on the machine: {wall['units']} units in {wall['hours']:.1f} "
        f"hours while any was being scored, {wall['units_per_hour']:.0f} units an hour.")
    return (f"Time: {timing['units']} units timed, {timing['seconds_per_unit']:.1f} s a unit ({stages}): {hour}. "
            f"Scored on {where}.{together}")


def autointerp_report(result, report: HtmlReport | None = None, examples: int = 10) -> HtmlReport:
    """The per-kind table, the controls' verdict, the figure, and ten examples per kind (best, middle, worst)."""
    s = result.summary()
    report = report or HtmlReport(f"Autointerpretability — {result.model}")
    report.heading("Explanation scores by unit kind")
    if s.get("progress"):
        report.text(progress_text(s["progress"]))
    names = [n for n in PANELS if n in s["scorers"]]
    report.table(["kind", "site", "units", *names, "distinct explanations", "most common explanation",
                  "unreadable answers"],
                 [[k, s["sites"].get(k, ""), v["units"], *[scorer_cell(v["scorers"][n]) for n in names],
                   f"{v['distinct']}/{v['units']}",
                   "" if v["most_common"] is None else
                   f"{v['most_common']} ({v['most_common_share']:.0%})", v["malformed"]]
                  for k, v in s["kinds"].items()])
    report.text("Each scorer: mean [bootstrap 95% CI]; acc is the mean balanced accuracy at the scorer's yes/no.")
    report.text(controls_text(s["controls"]))
    report.text(timing_text(s.get("timing", {})))
    degenerate = [k for k, v in s["kinds"].items() if v["most_common_share"] and v["most_common_share"] > 0.5]
    if degenerate:
        report.text(f"Degenerate explainer: one sentence explains most units of {', '.join(degenerate)}; "
                    "its scores measure the explainer, not the units.")
    report.figure(scores_figure(result), "each dot is one unit; the diamond is the mean with its bootstrap 95% CI")
    for kind in s["kinds"]:
        rows = example_units(result, kind, examples)
        report.table([f"{kind} unit", *names, "explanation"],
                     [[r["unit"] if not r.get("label") else f"{r['unit']} ({r['label']})",
                       *[r.get(PANELS[n][0]) for n in names], r["explanation"]] for r in rows])
    return report
