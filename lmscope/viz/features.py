"""Feature pages: a self-contained HTML page per feature plus an index, with the data and a Neuronpedia export.

Each page's data is written as JSON beside it, and all features in Neuronpedia's batch layout. No external
script, style or font: the pages open offline.

Everything here reads a :class:`lmscope.methods.sae.features.FeatureExamples`; nothing touches a model.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 64rem; padding: 0 1rem; color: #1d1d1f; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 1.6rem; border-bottom: 1px solid #ddd; }
.ctx { font-family: ui-monospace, Menlo, monospace; white-space: pre-wrap; margin: 0.25rem 0; font-size: 0.85rem; }
.ctx span { border-radius: 2px; } .ctx .peak { outline: 1px solid #c60; }
.meta { color: #555; font-size: 0.85rem; } table { border-collapse: collapse; font-size: 0.85rem; }
td, th { border: 1px solid #ddd; padding: 0.15rem 0.4rem; text-align: left; } td.num { text-align: right; }
.cols { display: flex; gap: 2rem; flex-wrap: wrap; }
"""


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def _context_html(example: dict, scale: float) -> str:
    """Tokens with a background whose strength is the feature's activation (relative to the feature's maximum)."""
    spans = []
    for i, (token, value) in enumerate(zip(example["tokens"], example["values"])):
        alpha = min(1.0, max(0.0, value / scale)) if scale > 0 else 0.0
        cls = ' class="peak"' if i == example["max_index"] else ""
        spans.append(f'<span{cls} style="background: rgba(255,140,0,{alpha:.2f})" title="{value:.3f}">'
                     f"{html.escape(token)}</span>")
    return f'<div class="ctx">{"".join(spans)} <span class="meta">({example["max"]:.3f})</span></div>'


def _histogram_svg(heights: list[float], edges: list[float], width: int = 420, height: int = 120) -> str:
    """The activation histogram as inline SVG."""
    if not heights:
        return '<p class="meta">never fires</p>'
    top, bar = max(heights) or 1.0, width / len(heights)
    bars = "".join(f'<rect x="{i * bar:.1f}" y="{height - h / top * height:.1f}" width="{bar - 1:.1f}" '
                   f'height="{h / top * height:.1f}" fill="#c60"><title>{edges[i]:.3f}-{edges[i + 1]:.3f}: {int(h)}'
                   f"</title></rect>" for i, h in enumerate(heights))
    return (f'<svg width="{width}" height="{height + 16}" role="img" aria-label="activation histogram">{bars}'
            f'<text x="0" y="{height + 14}" font-size="11">{edges[0]:.2f}</text>'
            f'<text x="{width}" y="{height + 14}" font-size="11" text-anchor="end">{edges[-1]:.2f}</text></svg>')


def _logit_table(rows: list, label: str) -> str:
    cells = "".join(f"<tr><td><code>{html.escape(repr(t))}</code></td><td class='num'>{v:+.3f}</td></tr>"
                    for t, v in rows)
    return f"<table><thead><tr><th>{label}</th><th>effect</th></tr></thead><tbody>{cells}</tbody></table>"


def feature_page(result, page: dict) -> str:
    """The HTML page of one feature."""
    scale = page["max"] or 1.0
    parts = [f"<h1>Feature {page['feature']} — {html.escape(result.site)}, {html.escape(result.model)}</h1>",
             f'<p class="meta">fires on {100 * page["density"]:.3f}% of {result.tokens} tokens; maximum activation '
             f'{page["max"]:.3f}. <a href="index.html">all features</a></p>',
             "<h2>Top-activating contexts</h2>", *(_context_html(e, scale) for e in page["top"]),
             "<h2>Activation histogram</h2>", _histogram_svg(page["histogram"]["heights"], page["histogram"]["edges"]),
             "<h2>Logit effects (W_U · decoder direction)</h2>",
             f'<div class="cols">{_logit_table(page["logits"]["positive"], "raises")}'
             f'{_logit_table(page["logits"]["negative"], "lowers")}</div>']
    for q in page["quantiles"]:
        parts.append(f"<h2>Activations {q['bin_min']:.3f} – {q['bin_max']:.3f} ({q['bin_contains']} tokens)</h2>")
        parts += [_context_html(e, scale) for e in q["examples"]]
    return _page(f"Feature {page['feature']}", "\n".join(parts))


def index_page(result) -> str:
    """The index: every selected feature with its density, maximum and top token."""
    dead = float((result.density == 0).float().mean())
    rows = "".join(f'<tr><td><a href="feature-{p["feature"]}.html">{p["feature"]}</a></td>'
                   f'<td class="num">{100 * p["density"]:.3f}%</td><td class="num">{p["max"]:.3f}</td>'
                   f'<td><code>{html.escape(repr(p["top_token"]))}</code></td></tr>' for p in result.pages)
    body = (f"<h1>Features of {html.escape(result.site)} — {html.escape(result.model)}</h1>"
            f'<p class="meta">{result.d_sae} latents; {100 * dead:.1f}% never fired on {result.tokens} tokens.</p>'
            "<table><thead><tr><th>feature</th><th>density</th><th>max</th><th>top token</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")
    return _page(f"Features — {result.site}", body)


def _np_activation(example: dict, q: dict | None = None) -> dict:
    """One example in Neuronpedia's activation layout (top examples carry no bin: -1)."""
    bins = {k: q[k] for k in ("bin_min", "bin_max", "bin_contains")} if q else dict.fromkeys(
        ("bin_min", "bin_max", "bin_contains"), -1)
    return {**bins, "tokens": example["tokens"], "values": example["values"]}


def _np_feature(p: dict) -> dict:
    pos, neg = p["logits"]["positive"], p["logits"]["negative"]
    return {"feature_index": p["feature"], "frac_nonzero": p["density"],
            "pos_str": [t for t, _ in pos], "pos_values": [v for _, v in pos],
            "neg_str": [t for t, _ in neg], "neg_values": [v for _, v in neg],
            "freq_hist_data_bar_heights": p["histogram"]["heights"],
            "freq_hist_data_bar_values": p["histogram"]["edges"][:-1],
            "activations": [_np_activation(e) for e in p["top"]]
            + [_np_activation(e, q) for q in p["quantiles"] for e in q["examples"]]}


def neuronpedia_batch(result) -> dict:
    """The features in Neuronpedia's batch layout (as SAEDashboard's Neuronpedia runner writes it)."""
    return {"model_id": result.model, "layer": result.site, "features": [_np_feature(p) for p in result.pages]}


def write_feature_pages(result, out: str | Path) -> Path:
    """Write index.html, feature-<i>.html and .json per feature, and neuronpedia.json into ``out``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for page in result.pages:
        _write(folder / f"feature-{page['feature']}.html", feature_page(result, page))
        _write(folder / f"feature-{page['feature']}.json", json.dumps(page, ensure_ascii=False))
    _write(folder / "neuronpedia.json", json.dumps(neuronpedia_batch(result), ensure_ascii=False))
    _write(folder / "index.html", index_page(result))
    return folder / "index.html"
