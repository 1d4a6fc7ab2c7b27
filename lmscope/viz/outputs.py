"""Run folders: what a finished method writes to its output folder, shared by the command line and the workbench.

A run folder holds ``result/`` (the result, reloadable with :func:`lmscope.load_result`), a summary JSON, its PNG
figures and a self-contained ``report.html``; ``command.json`` (written by the caller) says who made it and when.
"""

from __future__ import annotations

from pathlib import Path

from lmscope.io import write_json
from lmscope.viz.graphs import graph_figure, graph_report
from lmscope.viz.lens import lens_report, plot_lens_curves, plot_lens_grid
from lmscope.viz.neurons import neurons_report, plot_neurons
from lmscope.viz.report import HtmlReport, save_figure
from lmscope.viz.trace import plot_trace, trace_report


def save_run(out: str | Path, result, summary_name: str) -> Path:
    """Save ``result`` to ``out/result/`` and its summary to ``out/<summary_name>`` (JSON, atomically)."""
    out = Path(out)
    result.save(out / "result")
    write_json(out / summary_name, result.summary())
    return out


def write_lens(result, out: str | Path) -> Path:
    """result/, lens.json, lens.png, lens_curves.png and report.html of a logit lens."""
    out = save_run(out, result, "lens.json")
    plot_lens_grid(result, out / "lens.png")
    plot_lens_curves(result, out / "lens_curves.png")
    lens_report(result).write(out / "report.html")
    return out


def write_trace(result, out: str | Path) -> Path:
    """result/, trace.json, trace_<kind>.png and report.html of a causal trace."""
    out = Path(out)
    result.save(out / "result")
    write_json(out / "trace.json", result.summary(), indent=None)
    for kind in result.scores:
        plot_trace(result, kind, out / f"trace_{kind}.png")
    trace_report(result).write(out / "report.html")
    return out


def write_lesion(result, out: str | Path) -> Path:
    """result/, lesion.json and report.html of one lesion."""
    out = save_run(out, result, "lesion.json")
    report = HtmlReport(f"Lesion: {result.label}", f"{result.model} · {result.prompt!r}")
    rows = [[i + 1, *b, *a] for i, (b, a) in enumerate(zip(result.before, result.after))]
    report.table(["rank", "unmodified", "p", result.label, "p"], rows).write(out / "report.html")
    return out


def write_neurons(result, out: str | Path) -> Path:
    """result/, neurons.json, neurons.png and report.html of a text neuron search."""
    out = save_run(out, result, "neurons.json")
    plot_neurons(result, out / "neurons.png")
    neurons_report(result).write(out / "report.html")
    return out


def write_graph(result, out: str | Path) -> Path:
    """result/, graph.json, graph-circuit-tracer.json (its frontend's format), graph.png and report.html of a graph."""
    out = save_run(out, result, "graph.json")
    write_json(out / "graph-circuit-tracer.json", result.to_json(slug=out.name), indent=None)
    save_figure(graph_figure(result), out / "graph.png")
    graph_report(result).write(out / "report.html")
    return out
