"""Time and peak memory of attribution graphs against prompt length, and the estimate's error.

Each length runs in a fresh process (peak RSS is per process): the graph of a prompt of about N tokens (wiki text
cut to N tokens) over the transcoders of ``--transcoders``; the estimate made before the run (nodes, backward
passes, bytes) beside the measured seconds and peak RSS. Writes bench/results/graphs-MODEL.md.

    python bench/bench_graphs.py [--transcoders out/transcoders-smollm2] [--model smollm2-135m]
        [--runs 10:0:64 10:1024:8 50:1024:8 200:1024:8]

A run is TOKENS:CAP:BATCH: the prompt length, the cap on explored features (0: every active feature) and the rows
per backward pass. One whose estimate is over the memory cap (4 GB) is listed as refused, with its estimate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

RESULTS = Path(__file__).resolve().parent / "results"

ONE = """
import json, resource, sys, time, torch
torch.set_num_threads(2)
import lmscope
from lmscope.cli.graphs import load_transcoders
from lmscope.data.corpus import iter_texts
from lmscope.methods.graphs import GraphConfig, attribution_graph
model, folder, n, cap, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
lm = lmscope.load(model)
text = next(t for t in iter_texts("wiki", split="test") if len(lm.tokenizer(t)["input_ids"]) > n + 5)
ids = lm.tokenizer(text)["input_ids"][:n]
prompt = lm.tokenizer.decode(ids)
tcs = load_transcoders(folder, lm)
t0 = time.perf_counter()
try:
    g = attribution_graph(lm, prompt, tcs, GraphConfig(max_feature_nodes=cap, batch_size=batch))
except lmscope.LmscopeError as err:
    print(json.dumps({"tokens": n, "cap": cap, "batch": batch, "refused": str(err)}))
    sys.exit(0)
print(json.dumps({"tokens": g.n_pos, "cap": cap, "batch": batch, "seconds": time.perf_counter() - t0,
                  "estimate": g.cost, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
                  "scores": g.scores, "features": g.n_feat, "active": g.active_features}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--transcoders", default="out/transcoders-smollm2",
                        help="a folder of transcoders (sae train --transcoder); default out/transcoders-smollm2")
    parser.add_argument("--runs", nargs="+", default=["10:0:64", "10:1024:8", "50:1024:8", "200:1024:8"],
                        help="TOKENS:CAP:BATCH each (cap 0: every active feature)")
    args = parser.parse_args()
    if not Path(args.transcoders).is_dir():
        print(f"bench_graphs: no transcoders at {args.transcoders}: train them first (lmscope sae train --transcoder "
              f"--out {args.transcoders}); nothing measured")
        return
    rows = []
    for run in args.runs:
        n, cap, batch = run.split(":")
        out = subprocess.run([sys.executable, "-c", ONE, args.model, args.transcoders, n, cap, batch],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    lines = [f"# Attribution graphs on {args.model}: time and memory against prompt length", "",
             f"`python bench/bench_graphs.py --model {args.model} --transcoders {args.transcoders} --runs "
             f"{' '.join(args.runs)}` (2-core CPU, float32; each run in a fresh process).", "",
             "| tokens | batch | active features | explored | nodes | backward passes | estimated GB | peak RSS GB | "
             "estimated s | seconds | replacement | completeness |", "|" + "---|" * 12]
    for r in rows:
        if "refused" in r:
            lines.append(f"| {r['tokens']} | {r['batch']} | | cap {r['cap'] or 'none'} | | | | | | | refused: "
                         f"{r['refused']} | |")
            continue
        e = r["estimate"]
        lines.append(f"| {r['tokens']} | {r['batch']} | {r['active']:,} | {r['features']:,} | {e['nodes']:,} | "
                     f"{e['backward_passes']} | {e['memory_bytes'] / 1e9:.2f} | {r['peak_rss_gb']:.2f} | "
                     f"{e['seconds_estimate']:.0f} | {r['seconds']:.1f} | {r['scores']['replacement']:.3f} | "
                     f"{r['scores']['completeness']:.3f} |")
    lines += ["", "Peak RSS includes the model and the transcoders (loaded once per process); the estimate counts the "
                  "graph's own tensors and the retained forward pass of one batch, and its time is one timed pass "
                  "times the passes."]
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"graphs-{args.model}.md"
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
