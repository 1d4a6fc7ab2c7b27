"""bfloat16 against float32 on this machine's CPU: matmuls, and a bundled model's forward.

What :mod:`lmscope.model.precision` decides from (its own probe's ratio is printed too): on a CPU with native
bfloat16 (AVX512-BF16, AMX) bfloat16 is as fast or faster; on one with AVX2 alone it is emulated. Each timing is the
best of ``--reps`` after a warm-up, float32 and bfloat16 alternated, on ``--threads`` threads. Writes
bench/results/precision-cpu.md.

    python bench/bench_precision.py [--models smollm2-135m gemma3-270m] [--tokens 512] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

import lmscope  # noqa: E402
from lmscope.model import precision  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def best(fn, *args, reps: int) -> float:
    """The fastest of ``reps`` timed calls of ``fn(*args)`` (after one untimed call)."""
    fn(*args)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_rows(sides: list[int], reps: int) -> list[tuple[str, float, float]]:
    rows = []
    for n in sides:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a16, b16 = a.bfloat16(), b.bfloat16()
        rows.append((f"matmul {n} x {n}", best(torch.matmul, a, b, reps=reps), best(torch.matmul, a16, b16, reps=reps)))
    return rows


def model_rows(names: list[str], tokens: int, reps: int) -> list[tuple[str, float, float]]:
    rows = []
    for name in names:
        times = {}
        for dtype in ("float32", "bfloat16"):
            lm = lmscope.load(name, dtype=dtype)
            ids = torch.randint(1000, 5000, (tokens // 128, 128))
            with torch.no_grad():
                times[dtype] = best(lm.model, ids, reps=reps)
            del lm
        rows.append((f"{name} forward, {tokens} tokens", times["float32"], times["bfloat16"]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="*", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--sides", type=int, nargs="+", default=[128, 256, 1024])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    probe = precision.bfloat16_slowdown("cpu")
    rows = matmul_rows(args.sides, args.reps) + model_rows(args.models, args.tokens, args.reps)
    caps = ", ".join(n for n in ("avx2", "avx512", "avx512_bf16", "amx_tile")
                     if getattr(torch.cpu, f"_is_{n}_supported", lambda: False)())
    lines = ["# bfloat16 against float32 on the CPU", "",
             f"`python bench/bench_precision.py --threads {args.threads} --tokens {args.tokens}`; "
             f"{precision.cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
             f"CPU capability {torch.backends.cpu.get_cpu_capability()} "
             f"({caps or 'none of avx2 / avx512 / avx512_bf16 / amx'}). Best of {args.reps} after a warm-up.", "",
             f"lmscope's probe (`lmscope.model.precision.bfloat16_slowdown`, a 128 x 128 matmul on one thread): "
             f"bfloat16 takes **{probe:.1f}x** as long as float32, so bfloat16 counts as "
             f"{'fast' if probe <= precision.SLOWER else 'slow'} here (the rule: at most {precision.SLOWER:g}x).", "",
             "| what | float32 (ms) | bfloat16 (ms) | bfloat16 / float32 |", "|---|---|---|---|"]
    lines += [f"| {what} | {1e3 * f32:.1f} | {1e3 * b16:.1f} | {b16 / f32:.1f}x |" for what, f32, b16 in rows]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "precision-cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
