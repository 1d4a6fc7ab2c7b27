"""The causal-tracing commands: ``trace`` (one prompt) and ``trace-dataset`` (average effects over facts)."""

from __future__ import annotations

from pathlib import Path

from lmscope.cli.operations import operation_command
from lmscope.cli.registry import arg, command, config, load_model, out_dir
from lmscope.data.facts import load_known_facts
from lmscope.distributed import World
from lmscope.io import write_json
from lmscope.methods.trace import TraceConfig, trace_dataset
from lmscope.ops import TRACE
from lmscope.viz.report import save_figure
from lmscope.viz.trace import aie_figure, aie_report

trace = operation_command("trace", TRACE, out="out/trace", wrote="trace.json, trace_*.png, report.html and result/")


@command("trace-dataset",
         arg("--data", type=Path, required=True, help="known_1000.json (ROME's known facts)"),
         arg("--limit", type=int, help="trace only the first N facts"),
         arg("--all-facts", action="store_true", help="also trace facts the model does not predict"),
         configs=(TraceConfig,), out="out/trace-dataset")
def trace_facts(args) -> int:
    """Trace known facts and write records.jsonl, result/, summary.json, aie.png and report.html.

    A model that predicts none of the facts is an error (nothing to average; --all-facts traces them anyway).
    """
    cfg = config(args, TraceConfig)
    facts = load_known_facts(args.data, args.limit)
    lm = load_model(args)
    out, world = out_dir(args), World.from_env(lm.device)  # under torchrun: each rank traces its share
    result = trace_dataset(lm, facts, out, cfg, only_predicted=not args.all_facts, world=world)
    if not world.main:
        return 0
    write_json(out / "summary.json", result.summary())
    print(f"{lm.name}: traced {result.n_kept} of {result.n_facts} facts; ATE = {result.ate:.4f}")
    save_figure(aie_figure(result), out / "aie.png")
    aie_report(result).write(out / "report.html")
    for kind, peak in result.summary()["peaks_last_subject_token"].items():
        print(f"  {kind:<18} AIE peak at the last subject token: layer {peak['layer']} ({peak['aie']:.4f})")
    print(f"wrote {out}/records.jsonl, result/, summary.json, aie.png and report.html")
    return 0
