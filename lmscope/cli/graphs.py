"""The ``graph`` command: the attribution graph of one prompt over a folder of transcoders."""

from __future__ import annotations

import logging
from pathlib import Path

from lmscope.cli.registry import arg, command, config, load_model, out_dir, save_result
from lmscope.errors import InputError
from lmscope.io import write_json
from lmscope.methods.graphs import GraphConfig, LayerTranscoder, attribution_graph, from_coder, head_loadings
from lmscope.methods.sae import load_sae
from lmscope.model.sites import Site
from lmscope.viz.graphs import graph_figure, graph_report
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
    out = out_dir(args)
    save_result(out, result, "graph.json")
    write_json(out / "graph-circuit-tracer.json", result.to_json(slug=out.name), indent=None)
    save_figure(graph_figure(result), out / "graph.png")
    graph_report(result).write(out / "report.html")
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
