"""Plots and self-contained HTML reports. Everything here only reads result objects."""

from lmscope.viz.lens import lens_report, plot_lens_curves, plot_lens_grid
from lmscope.viz.report import HtmlReport, figure_png, save_figure

__all__ = ["HtmlReport", "figure_png", "lens_report", "plot_lens_curves", "plot_lens_grid", "save_figure"]
