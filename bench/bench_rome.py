"""ROME editing: ROME's procedure (as its code runs it) vs lmscope's rome_edit, same request, prefixes and statistics.

Prints both latencies, their ratio and the relative difference of the two updates of W_out, and writes the table to
bench/results/rome-<model>-<device>.md. The second-moment statistics are computed (or read from the cache) first
and are not timed: both procedures use the same matrix.

    python bench/bench_rome.py [--model smollm2-135m] [--layer 4] [--stats-samples 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

import lmscope  # noqa: E402
from lmscope.methods.rome import (  # noqa: E402
    EditRequest,
    RomeConfig,
    context_prefixes,  # noqa: E402
    rome_edit,
    second_moment,
)
from lmscope.methods.rome.reference import reference_update  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
REQUEST = EditRequest("{} is located in the city of", "The Eiffel Tower", " Rome")


def main() -> None:
    """Time both procedures (interleaved, median of the repeats) and print / write the comparison."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layer", type=int, default=4)
    parser.add_argument("--stats-samples", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(2)
    lm = lmscope.load(args.model, device=args.device)
    config = RomeConfig(layer=args.layer, stats_samples=args.stats_samples)
    stats = second_moment(lm, args.layer, config.stats_corpus, args.stats_samples)
    prefixes = context_prefixes(lm, config)  # sampled once, shared (ROME caches them too)
    times = {"reference": [], "lmscope": []}
    for _ in range(args.repeats):
        t = time.perf_counter()
        expected = reference_update(lm, REQUEST, args.layer, prefixes, config, stats.matrix)
        times["reference"].append(time.perf_counter() - t)
        t = time.perf_counter()
        with rome_edit(lm, REQUEST, config, stats=stats) as handle:
            times["lmscope"].append(time.perf_counter() - t)
            got = handle.edit.delta()
    diff = float((got - expected).norm() / expected.norm())
    ref, fast = statistics.median(times["reference"]), statistics.median(times["lmscope"])
    lines = [f"# ROME edit, {args.model} on {args.device} ({platform.node()}, torch {torch.__version__})", "",
             f"request {REQUEST.text!r} -> {REQUEST.target!r}, layer {args.layer}, {len(prefixes)} prefixes, "
             f"{config.v_steps} steps max, statistics over {stats.texts} texts ({stats.tokens} tokens), median of "
             f"{args.repeats}", "",
             "| procedure | seconds | speed-up | relative difference of the update |", "|---|---|---|---|",
             f"| ROME's procedure | {ref:.2f} | 1.0 | |",
             f"| lmscope rome_edit | {fast:.2f} | {ref / fast:.1f}x | {diff:.2e} |"]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"rome-{args.model}-{args.device}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
