"""Self-contained HTML reports: headings, text, tables and figures embedded as base64 PNG (no external files)."""

from __future__ import annotations

import base64
import html
import io
import os
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2rem auto; max-width: 72rem;
       color: #1d1d1f; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
th, td { border: 1px solid #ddd; padding: 0.2rem 0.45rem; text-align: left; }
th { background: #f4f4f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0; } figure img { max-width: 100%; } figcaption { color: #555; font-size: 0.85rem; }
code, .tok { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; white-space: pre; }
.meta { color: #555; font-size: 0.85rem; }
"""


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    buf = io.BytesIO()
    with warnings.catch_warnings():  # a token in a script the font lacks (a lens' top token) is drawn as a box
        warnings.filterwarnings("ignore", message="Glyph .* missing from font", category=UserWarning)
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write a figure as PNG (atomically) and close it; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(figure_png(fig, dpi))
    os.replace(tmp, path)
    return path


def _cell(value) -> str:
    if value is None or isinstance(value, float) and value != value:  # not defined (or not measured): a dash
        return '<td class="num">–</td>'
    if isinstance(value, float):
        return f'<td class="num">{value:.4g}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    return f"<td>{html.escape(str(value))}</td>"


class HtmlReport:
    """An HTML page built section by section; :meth:`write` produces one file with everything inlined."""

    def __init__(self, title: str, subtitle: str = ""):
        self.title = title
        self.parts: list[str] = [f"<h1>{html.escape(title)}</h1>"]
        if subtitle:
            self.parts.append(f'<p class="meta">{html.escape(subtitle)}</p>')

    def heading(self, text: str) -> HtmlReport:
        """Start a section."""
        self.parts.append(f"<h2>{html.escape(text)}</h2>")
        return self

    def text(self, text: str) -> HtmlReport:
        """A paragraph of plain text (escaped)."""
        self.parts.append(f"<p>{html.escape(text)}</p>")
        return self

    def raw(self, fragment: str) -> HtmlReport:
        """An HTML fragment the caller built (and escaped) itself."""
        self.parts.append(fragment)
        return self

    def table(self, header: list[str], rows: list[list]) -> HtmlReport:
        """A table; floats are shown with 4 significant digits."""
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        return self

    def figure(self, fig: Figure | bytes | str | Path, caption: str = "") -> HtmlReport:
        """Embed a figure (a matplotlib Figure, PNG bytes or a PNG file) as base64."""
        if isinstance(fig, Figure):
            png = figure_png(fig)
        elif isinstance(fig, bytes):
            png = fig
        else:
            png = Path(fig).read_bytes()
        data = base64.b64encode(png).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        img = f'<img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        self.parts.append(f"<figure>{img}{cap}</figure>")
        return self

    def render(self) -> str:
        """The whole page as a string."""
        body = "\n".join(self.parts)
        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}'
                f"</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")

    def write(self, path: str | Path) -> Path:
        """Write the page atomically; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.render(), encoding="utf-8")
        os.replace(tmp, path)
        return path
