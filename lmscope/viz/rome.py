"""Report section for CounterFact evaluations (reads a :class:`CounterFactResult`; never touches the model)."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from lmscope.viz.report import HtmlReport

SCORES = ("ES", "PS", "NS", "S")


def counterfact_figure(result) -> Figure:
    """Success scores of ROME and of the unedited model side by side (percent)."""
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    xs = range(len(SCORES))
    ax.bar([x - 0.2 for x in xs], [result.unedited[k] for k in SCORES], 0.4, label="unedited", color="#999")
    ax.bar([x + 0.2 for x in xs], [result.edited[k] for k in SCORES], 0.4, label="ROME", color="#2a7")
    ax.set_xticks(list(xs), SCORES)
    ax.set_ylim(0, 100)
    ax.set_ylabel("percent")
    ax.set_title(f"{result.model}: CounterFact, {result.n_records} records, layer {result.layer}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def counterfact_report(result, report: HtmlReport | None = None) -> HtmlReport:
    """Metrics table (edited vs unedited), notes, and the score figure."""
    report = report or HtmlReport(f"ROME on CounterFact — {result.model}")
    report.heading("CounterFact metrics (percent)")
    names = list(result.edited)
    report.table(["", *names], [["ROME", *(result.edited[n] for n in names)],
                                ["unedited", *(result.unedited.get(n, float("nan")) for n in names)]])
    for note in result.notes:
        report.text(note)
    report.figure(counterfact_figure(result), "efficacy, generalisation, specificity and their harmonic mean")
    return report
