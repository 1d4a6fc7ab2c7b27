"""The ``graph`` commands: a prompt's attribution graph, the transcoders as a replacement model, a graph's check.

``graph run`` (``lmscope graph PROMPT``) over a folder of transcoders, ``graph eval`` (each layer's FVE, CE recovered
with all in place), ``graph check`` (a saved graph's top features removed in the real model).
"""

from __future__ import annotations

import logging
from pathlib import Path

from lmscope.cli.registry import arg, command, config, load_model, out_dir
from lmscope.errors import InputError
from lmscope.io import load_result
from lmscope.methods.graphs import (
    AttributionGraph,
    GraphConfig,
    LayerTranscoder,
    ReplacementEvalConfig,
    attribution_graph,
    check_graph,
    evaluate_replacement,
    from_coder,
    head_loadings,
)
from lmscope.methods.sae import load_sae
from lmscope.model.sites import Site
from lmscope.viz.graphs import check_figure, check_report, replacement_figure, replacement_report
from lmscope.viz.outputs import save_run, write_graph
from lmscope.viz.report import save_figure

log = logging.getLogger(__name__)


def load_transcoders(folder: str | Path, lm) -> dict[int, LayerTranscoder]:
    """Every transcoder in ``folder``, by layer, checked against ``lm``.

    ``folder`` is one transcoder folder or a folder of them (as ``sae train --transcoder`` writes); each must read
    ``mlp_in.L`` and write ``mlp_out.L`` of the model's width.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder of transcoders")
    candidates = [root] if (root / "cfg.json").is_file() else sorted(p for p in root.iterdir() if p.is_dir())
    out: dict[int, LayerTranscoder] = {}
    for path in candidates:
        if not any((path / name).is_file() for name in ("cfg.json", "config.json", "params.npz", "params.safetensors")):
            continue
        coder = load_sae(path)
        site, target = coder.site, getattr(coder, "target", None)
        if not coder.transcoder or site is None or site.kind != "mlp_in" or target != Site(site.layer, "mlp_out"):
            raise InputError(f"{path} is not a transcoder of one layer's MLP (mlp_in.L -> mlp_out.L): it reads {site}"
                             f"{' and writes ' + str(target) if target is not None else ''}")
        if coder.d_in != lm.d_model or site.layer >= lm.n_layers:
            raise InputError(f"{path} reads {coder.d_in}-wide layer {site.layer}; {lm.name} has {lm.n_layers} layers "
                             f"of width {lm.d_model}")
        if site.layer in out:
            raise InputError(f"{root} holds two transcoders of layer {site.layer}")
        out[site.layer] = from_coder(coder, site.layer)
    if not out:
        raise InputError(f"{root} holds no transcoder folder")
    missing = [layer for layer in range(lm.n_layers) if layer not in out]
    if missing:
        log.warning("no transcoder for layer(s) %s: their whole MLP output is an error node", missing)
    return out


@command("graph",
         arg("prompt", help="the prompt whose next-token logits the graph explains"),
         arg("--transcoders", required=True, help="a folder of transcoders, one per layer (sae train --transcoder)"),
         arg("--target", nargs="+", default=None, help="explain these next tokens (one token each, e.g. ' Paris') "
                                                       "instead of the most likely ones"),
         arg("--head-loadings", type=int, default=10, metavar="N",
             help="the attention heads carrying each of the N strongest kept edges (0: none; costs n_layers x "
                  "n_heads backward rows per target; default 10)"),
         configs=(GraphConfig,), out="out/graph")
def graph(args) -> int:
    """Attribution graph of a prompt: result/, graph.json, graph-circuit-tracer.json, graph.png, report.html."""
    cfg = config(args, GraphConfig)
    lm = load_model(args)
    transcoders = load_transcoders(args.transcoders, lm)
    if args.head_loadings < 0:
        raise InputError(f"--head-loadings must be >= 0, got {args.head_loadings}")
    result = attribution_graph(lm, args.prompt, transcoders, cfg, targets=args.target, source=str(args.transcoders))
    if args.head_loadings:
        result.heads = [e.as_dict() for e in head_loadings(lm, result, transcoders, args.head_loadings)]
    out = write_graph(result, out_dir(args))
    s, summary = result.scores, result.summary()
    print(f"{lm.name}: {args.prompt!r} -> " + ", ".join(f"{t['token']!r} {t['prob']:.3f}" for t in summary["targets"]))
    print(f"  {summary['features_explored']} features explored, {summary['nodes']} nodes, {summary['kept_nodes']} "
          f"kept; replacement {s['replacement']:.3f}, completeness {s['completeness']:.3f}; "
          f"{result.cost['seconds']} s, peak RSS {result.cost['peak_rss_gb']} GB")
    for top in summary["top"][:5]:
        print(f"  {top['node']:<24} cumulative influence {top['cumulative_influence']:.3f}, direct on the top logit "
              f"{top['direct_to_top_logit']:+.3f}")
    for edge in result.heads[:3]:
        print(f"  {edge['source']} -> {edge['target']} ({edge['weight']:+.3f}) carried by "
              + ", ".join(f"L{layer}.H{h} {v:+.3f}" for layer, h, v in edge["heads"]))
    print(f"wrote {out}/graph.json, graph-circuit-tracer.json, graph.png, report.html and result/")
    return 0


TRANSCODERS = arg("--transcoders", required=True,
                  help="a folder of transcoders, one per layer (sae train --transcoder)")


@command("graph-eval", TRANSCODERS, configs=(ReplacementEvalConfig,), out="out/graph-eval")
def graph_eval(args) -> int:
    """The transcoders as a replacement model: result/, replacement.json, replacement.png, report.html."""
    cfg = config(args, ReplacementEvalConfig)
    lm = load_model(args)
    result = evaluate_replacement(lm, load_transcoders(args.transcoders, lm), cfg, source=str(args.transcoders))
    out = save_run(out_dir(args), result, "replacement.json")
    save_figure(replacement_figure(result), out / "replacement.png")
    replacement_report(result).write(out / "report.html")
    print(f"{lm.name}: {len(result.layers)} transcoders on {result.tokens:,} held-out positions: mean FVE "
          f"{sum(result.fve) / len(result.fve):.3f}; CE {result.ce_orig:.3f} -> {result.ce_replaced:.3f} "
          f"({result.ce_zero:.3f} zeroed): CE recovered {result.ce_recovered:.3f}")
    print(f"wrote {out}/replacement.json, replacement.png, report.html and result/")
    return 0


@command("graph-check",
         arg("graph", type=Path, help="a graph's run folder (lmscope graph --out) or its result folder"),
         arg("--transcoders", default=None, help="the transcoders it was built over (default: the folder it records)"),
         arg("--top", type=int, default=10, help="the most influential features removed, one at a time (default 10)"),
         out="out/graph-check")
def graph_check(args) -> int:
    """The intervention check of a saved graph: result/, check.json, check.png, report.html."""
    if args.top < 1:
        raise InputError(f"--top must be >= 1, got {args.top}")
    graph = load_result(args.graph)
    if not isinstance(graph, AttributionGraph):
        raise InputError(f"{args.graph} holds a {type(graph).__name__}, not an attribution graph")
    lm = load_model(args)
    if lm.name != graph.model:
        raise InputError(f"{args.graph} is a graph of {graph.model}; --model is {lm.name}")
    folder = args.transcoders or graph.transcoders
    result = check_graph(lm, graph, load_transcoders(folder, lm), args.top)
    out = save_run(out_dir(args), result, "check.json")
    save_figure(check_figure(result), out / "check.png")
    check_report(result).write(out / "report.html")
    corr = result.agreement()
    print(f"{lm.name}: {graph.prompt!r} -> {result.target!r}; {len(result.rows)} features removed one at a time")
    print(f"  {'feature':<18} {'direct':>9} {'graph':>9} {'frozen':>9} {'real':>9}")
    for r in result.rows:
        print(f"  {r['node']:<18} {r['direct']:>+9.3f} {r['total']:>+9.3f} {r['measured_replacement']:>+9.3f} "
              f"{r['measured']:>+9.3f}")
    print("  correlation with the real model: " + ", ".join(
        f"{name} {'undefined' if corr[key] is None else format(corr[key], '.3f')}"
        for name, key in (("direct", "direct"), ("through the graph", "total"))))
    print(f"wrote {out}/check.json, check.png, report.html and result/")
    return 0
