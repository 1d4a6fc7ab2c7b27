"""Forward-pass overhead of the model layer: bare HF vs lmscope (no hooks) vs lmscope capturing every resid_post.

Prints one table and writes it to bench/results/forward.md. Each model runs in its own process so that its peak
memory (max RSS) is its own. Timings interleave the three variants in every repeat and report the median.

    python bench/bench_forward.py [--models smollm2-135m gemma3-270m] [--repeats 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = [(1, 12), (8, 128)]  # (batch, tokens)


def rss_mb() -> float:
    """Current resident set size in MiB (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    """Peak resident set size of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_model(name: str, repeats: int) -> dict:
    """Measure one model in this process."""
    import torch

    import lmscope

    torch.set_num_threads(2)
    before = rss_mb()
    t0 = time.perf_counter()
    lm = lmscope.load(name)
    load_s = time.perf_counter() - t0
    loaded = {"load_s": load_s, "rss_after_load_mb": rss_mb() - before, "peak_after_load_mb": peak_mb(),
              "params_mb": sum(p.numel() * p.element_size() for p in lm.model.parameters()) / 2**20}
    sites = lm.sites("resid_post")
    variants = {
        "bare HF": lambda ids: lm.model(input_ids=ids, use_cache=False).logits,
        "lmscope": lambda ids: lm(ids),
        "lmscope + capture all resid_post": lambda ids: lm.run_with_cache(ids, sites)[0],
    }
    rows = []
    gen = torch.Generator().manual_seed(0)
    for batch, tokens in SHAPES:
        ids = torch.randint(100, lm.vocab_size, (batch, tokens), generator=gen)
        times = {k: [] for k in variants}
        with torch.no_grad():
            for fn in variants.values():  # warm-up
                fn(ids)
            for _ in range(repeats):
                for key, fn in variants.items():
                    t = time.perf_counter()
                    fn(ids)
                    times[key].append(time.perf_counter() - t)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        rows.append({"batch": batch, "tokens": tokens, **med})
    return {"model": name, **loaded, "rows": rows, "peak_end_mb": peak_mb()}


def table(results: list[dict], repeats: int) -> str:
    """The markdown table of all results."""
    import torch

    lines = [f"# Forward overhead ({platform.node()}, torch {torch.__version__}, 2 threads, "
             f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, median of {repeats})", "",
             "| model | batch x tokens | bare HF ms | lmscope ms (ratio) | capture all resid_post ms (ratio) |",
             "|---|---|---|---|---|"]
    for res in results:
        for r in res["rows"]:
            bare, ours, cap = r["bare HF"], r["lmscope"], r["lmscope + capture all resid_post"]
            lines.append(f"| {res['model']} | {r['batch']} x {r['tokens']} | {bare:.2f} | {ours:.2f} "
                         f"({ours / bare:.3f}) | {cap:.2f} ({cap / bare:.3f}) |")
    lines += ["", "| model | parameters MiB | RSS added by load (mmap) MiB | peak RSS after load MiB "
              "| peak RSS at end MiB | load s |",
              "|---|---|---|---|---|---|"]
    for res in results:
        lines.append(f"| {res['model']} | {res['params_mb']:.0f} | {res['rss_after_load_mb']:.0f} | "
                     f"{res['peak_after_load_mb']:.0f} | {res['peak_end_mb']:.0f} | "
                     f"{res['load_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run every model in a subprocess and write the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_model(args.one, args.repeats)))
        return
    results = []
    for name in args.models:
        out = subprocess.run([sys.executable, __file__, "--one", name, "--repeats", str(args.repeats)],
                             stdout=subprocess.PIPE, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    text = table(results, args.repeats)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "forward.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
