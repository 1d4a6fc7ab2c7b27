"""Causal tracing: ROME's procedure (one batch of 1 clean + samples corrupted rows per cell) vs lmscope, in one run.

Same model, prompt, noise draws and target; prints both times, the ratio and the largest difference of any
P*_restored, and writes the table to bench/results/trace.md.

    python bench/bench_trace.py [--model smollm2-135m] [--kinds hidden mlp attn]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

import lmscope  # noqa: E402
from lmscope.methods.trace import (  # noqa: E402
    TraceConfig,
    causal_trace,
    reference_trace,  # noqa: E402
)

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT, SUBJECT = "The Eiffel Tower is located in the city of", "The Eiffel Tower"


def main() -> None:
    """Run both procedures and print / write the comparison."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--kinds", nargs="+", default=["hidden", "mlp", "attn"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(2)
    lm = lmscope.load(args.model, device=args.device)
    config = TraceConfig(kinds=tuple(args.kinds))
    causal_trace(lm, PROMPT, SUBJECT, config=TraceConfig(kinds=("hidden",), samples=1))  # warm-up, noise cached
    t = time.perf_counter()
    fast = causal_trace(lm, PROMPT, SUBJECT, config=config)
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    ref = reference_trace(lm, PROMPT, SUBJECT, config=config)
    t_ref = time.perf_counter() - t
    diff = max(float((fast.scores[k] - ref[k]).abs().max()) for k in ref)
    n_tok = len(fast.tokens)
    lines = [f"# Causal tracing, {args.model} on {args.device} ({platform.node()}, torch {torch.__version__})", "",
             f"prompt {PROMPT!r}, subject {SUBJECT!r}, {n_tok} tokens, {lm.n_layers} layers, kinds "
             f"{', '.join(args.kinds)}, {config.samples} samples, window {config.window}", "",
             "| procedure | seconds | speed-up | max abs difference |", "|---|---|---|---|",
             f"| ROME reference (one batch per cell) | {t_ref:.1f} | 1.0 | |",
             f"| lmscope causal_trace | {t_fast:.1f} | {t_ref / t_fast:.1f}x | {diff:.2e} |"]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"trace-{args.model}-{args.device}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
