"""Plots and self-contained HTML reports. Everything here only reads result objects.

``report`` (the HTML report and figure saving), ``outputs`` (the run folders the CLI and the workbench write), and one
module per family: ``lens``, ``trace``, ``rome``, ``stages``, ``features`` (SAE feature pages), ``patching``,
``autointerp``, ``neurons``, ``graphs`` (attribution graphs).
"""

from lmscope.viz.lens import lens_report, plot_lens_curves, plot_lens_grid
from lmscope.viz.report import HtmlReport, figure_png, save_figure

__all__ = ["HtmlReport", "figure_png", "lens_report", "plot_lens_curves", "plot_lens_grid", "save_figure"]
