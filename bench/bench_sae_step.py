"""One ReLU + L1 training step (576 -> 4608, 4,096 rows, forward and backward) on the dense and the sparse route, in
float32 and under bfloat16 autocast, at densities a training run passes through: where the sparse route pays.

The densities are set through the encoder bias (a quantile of the pre-activations of Gaussian inputs). Each table
runs twice in one process: first with glibc's default allocator settings, then with freed large blocks kept for
reuse (:func:`lmscope.memory.keep_freed_memory`, which ``train_saes`` calls). Writes bench/results/sae-step-cpu.md.

    python bench/bench_sae_step.py [--repeats 4]
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

from lmscope.memory import keep_freed_memory  # noqa: E402
from lmscope.methods.sae import SaeConfig, build_sae  # noqa: E402
from lmscope.methods.sae.arch.sparse import SPARSE_BELOW  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DENSITIES = (0.3, 0.12, 0.08, 0.06, 0.04, 0.02, 0.01)


def step_seconds(sae, x: torch.Tensor, route: str, autocast: bool, repeats: int) -> float:
    """Median seconds of one forward + backward on ``route`` over ``repeats`` steps after one warm-up."""
    sae.sparse_below = 1.0 if route == "sparse" else 0.0

    def step():
        sae.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = sae(x)
        out.loss.backward()

    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = 3 * torch.randn(4096, 576)  # (rows, d_in)
    sae = build_sae(SaeConfig("relu", d_in=576, ratio=8, l1_coefficient=5.0))
    with torch.no_grad():
        pre = ((x - sae.b_dec) @ sae.W_enc).flatten()[:1_000_000]
    lines = ["# One ReLU + L1 training step: dense vs sparse route (576 -> 4608, 4,096 rows)", "",
             f"{platform.machine()}, {args.threads} threads, median of {args.repeats} steps (forward + backward) after "
             f"one warm-up. Command: `python bench/bench_sae_step.py`. lmscope takes the sparse route below a density "
             f"of {SPARSE_BELOW:g}."]
    for allocator in ("glibc's defaults", "freed blocks kept (lmscope.memory, as in sae train)"):
        if allocator != "glibc's defaults" and not keep_freed_memory():
            lines += ["", "(glibc's thresholds could not be changed here: no second table)"]
            break
        lines += ["", f"Allocator: {allocator}.", "",
                  "| density | L0 | float32 dense (s) | float32 sparse (s) | autocast dense (s) "
                  "| autocast sparse (s) |",
                  "|---|---|---|---|---|---|"]
        for density in DENSITIES:
            with torch.no_grad():
                sae.b_enc.fill_(-float(torch.quantile(pre, 1 - density)))
            cells = [f"{step_seconds(sae, x, route, autocast, args.repeats):.3f}"
                     for autocast in (False, True) for route in ("dense", "sparse")]
            lines.append(f"| {density:g} | {density * 4608:.0f} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    (RESULTS / "sae-step-cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
