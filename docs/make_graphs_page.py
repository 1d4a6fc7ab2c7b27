"""Write docs/graphs.md and its figures from finished ``lmscope graph`` runs.

    python docs/make_graphs_page.py --train out/transcoders-smollm2 --eval out/graph-eval-smollm2 \
        out/graph-eiffel out/graph-check-eiffel out/graph-ioi out/graph-check-ioi out/graph-capital \
        out/graph-check-capital

Positional arguments come in pairs: a graph's run folder (``lmscope graph PROMPT --out``), then its intervention
check (``lmscope graph check``). ``--eval``: the transcoders' evaluation (``lmscope graph eval``); ``--train``: the
folder ``sae train --transcoder`` wrote (its command and time). The bench table (bench/results/graphs-MODEL.md) is
included when present. Figures are copied to docs/figures/.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from lmscope import load_result

DOCS = Path(__file__).resolve().parent
BENCH = DOCS.parent / "bench" / "results"

NOTES: dict[str, str] = {  # what was seen in each graph (keyed by the graph folder's name); rewrite with new runs
}
SUMMARY = ""  # what the graphs show, all together (written after reading them)


def _command(folder: Path) -> str:
    info = folder / "command.json"
    return json.loads(info.read_text()).get("command", "") if info.is_file() else ""


def _minutes(folder: Path) -> str:
    info = folder / "command.json"
    if not info.is_file():
        return "?"
    data = json.loads(info.read_text())
    from datetime import datetime

    start, end = (datetime.fromisoformat(data[k]) for k in ("started", "finished"))
    return f"{(end - start).total_seconds() / 60:.1f}"


def transcoder_section(train: Path | None, evaluation: Path) -> list[str]:
    r = load_result(evaluation / "result")
    shutil.copy(evaluation / "replacement.png", DOCS / "figures" / f"graph-transcoders-{r.model}.png")
    lines = ["## The transcoders", ""]
    if train is not None:
        lines += [f"Trained with `{_command(train)}` ({_minutes(train)} min on this CPU, every layer's from one "
                  "harvest).", ""]
    lines += [f"Evaluated with `{_command(evaluation)}` on {r.tokens:,} held-out positions: the model's loss "
              f"{r.ce_orig:.3f}; with every MLP output replaced by its transcoder's prediction at once (errors "
              f"compounding through the layers) {r.ce_replaced:.3f}; with every MLP output zeroed {r.ce_zero:.3f}. "
              f"**CE recovered {r.ce_recovered:.3f}**, mean FVE {sum(r.fve) / len(r.fve):.3f}.", "",
              f"![per-layer FVE and L0](figures/graph-transcoders-{r.model}.png)", "",
              "| layer | " + " | ".join(str(la) for la in r.layers) + " |",
              "|---|" + "---|" * len(r.layers),
              "| FVE | " + " | ".join(f"{f:.2f}" for f in r.fve) + " |",
              "| L0 | " + " | ".join(f"{z:.0f}" for z in r.l0) + " |", ""]
    return lines


def graph_section(graph_dir: Path, check_dir: Path) -> list[str]:
    g, c = load_result(graph_dir / "result"), load_result(check_dir / "result")
    slug = graph_dir.name
    for src, dst in ((graph_dir / "graph.png", f"{slug}.png"), (check_dir / "check.png", f"{slug}-check.png")):
        shutil.copy(src, DOCS / "figures" / dst)
    s = g.summary()
    targets = ", ".join(f"`{t['token']!r}` ({t['prob']:.3f})" for t in s["targets"])
    corr = c.agreement()
    fmt = lambda v: "undefined" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [f"### {g.prompt!r}", "", f"`{_command(graph_dir)}`", "",
             f"Target {targets}. {s['features_explored']:,} of {s['active_features']:,} active features explored, "
             f"{s['nodes']:,} nodes, {s['kept_nodes']} kept and {s['kept_edges']:,} edges after pruning. "
             f"**Replacement score {g.scores['replacement']:.3f}, completeness {g.scores['completeness']:.3f}.** "
             f"{g.cost['seconds']:.0f} s, peak RSS {g.cost['peak_rss_gb']:.2f} GB (estimated before the run: "
             f"{g.cost['memory_bytes'] / 1e9:.2f} GB, {g.cost.get('seconds_estimate', float('nan')):.0f} s).", "",
             f"![graph of {g.prompt!r}](figures/{slug}.png)", "",
             "| most influential kept node | cumulative influence | direct effect on the target |", "|---|---|---|"]
    lines += [f"| {t['node']} | {t['cumulative_influence']:.3f} | {t['direct_to_top_logit']:+.3f} |"
              for t in s["top"][:10]]
    if g.heads:
        lines += ["", "Heads carrying the strongest edges: " + "; ".join(
            f"{e['source']} -> {e['target']} ({e['weight']:+.2f}): " + ", ".join(
                f"L{la}.H{h} {v:+.2f}" for la, h, v in e["heads"][:3]) for e in g.heads[:3]) + "."]
    lines += ["", f"**Intervention check** (`{_command(check_dir)}`): each of the top {len(c.rows)} features "
                  "removed alone (activation x decoder row subtracted at its position). Correlation of the "
                  f"predicted with the real change of the target's logit: direct edge {fmt(corr['direct'])}, "
                  f"through the graph {fmt(corr['total'])}.", "",
              "| feature | direct edge | through the graph | replacement model (frozen) | real model |",
              "|---|---|---|---|---|"]
    lines += [f"| {r['node']} | {r['direct']:+.3f} | {r['total']:+.3f} | {r['measured_replacement']:+.3f} | "
              f"{r['measured']:+.3f} |" for r in c.rows]
    lines += ["", f"![predicted against measured](figures/{slug}-check.png)", ""]
    if NOTES.get(slug):
        lines += [NOTES[slug], ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="graph folder, check folder, ... (pairs)")
    parser.add_argument("--eval", type=Path, required=True, help="the lmscope graph eval folder")
    parser.add_argument("--train", type=Path, default=None, help="the sae train --transcoder folder")
    args = parser.parse_args()
    if len(args.runs) % 2:
        parser.error("give the runs in pairs: a graph folder, then its check folder")
    model = load_result(args.eval / "result").model
    lines = ["# Attribution graphs", "",
             "Which transcoder features compute a next-token logit, and through which others (Ameisen et al. 2025; "
             "circuit-tracer's algorithm and defaults: `lmscope.methods.graphs`). The replacement model of one "
             "prompt holds every MLP output as its transcoder's active features plus an error node, with attention "
             "patterns and norm denominators frozen at the clean run; edges come from batched backward passes, "
             "pruning keeps the nodes carrying 0.8 of the influence on the logits and the edges carrying 0.98. "
             "Each graph is checked in the real model (its top features removed one at a time). Generated by "
             "`python docs/make_graphs_page.py` from the runs named below; every figure is from this project's "
             "2-core CPU.", "",
             "Controls that hold in the tests (tests/methods/graphs): with exact transcoders (the true MLP's neurons "
             "as features) the direct effects add up to the logit (completeness 1); every edge equals a finite "
             "difference of the linearised model; in the frozen replacement model removing a feature moves the "
             "logit by exactly its direct edge; exact transcoders recover CE 1 as a replacement model, zero ones "
             "0.", ""]
    if SUMMARY:
        lines += ["## What the graphs show", "", SUMMARY, ""]
    lines += transcoder_section(args.train, args.eval)
    lines += ["## Graphs", ""]
    for graph_dir, check_dir in zip(args.runs[::2], args.runs[1::2]):
        lines += graph_section(graph_dir, check_dir)
    bench = BENCH / f"graphs-{model}.md"
    if bench.is_file():
        text = bench.read_text().splitlines()
        lines += ["## Time and memory", "", *text[2:], ""]
    (DOCS / "graphs.md").write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {DOCS / 'graphs.md'}")


if __name__ == "__main__":
    main()
