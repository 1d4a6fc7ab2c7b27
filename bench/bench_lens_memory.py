"""Peak memory of the logit lens on a long prompt: positions unembedded in chunks vs all at once.

Each setting runs in its own process, so its peak RSS (max resident set size) is its own. Writes
bench/results/lens-memory-<model>.md.

    python bench/bench_lens_memory.py [--model smollm2-135m] [--tokens 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
RESULTS = Path(__file__).resolve().parent / "results"


def one_run(model: str, tokens: int, chunk: int) -> dict:
    """The lens of a ``tokens``-token prompt with ``chunk`` positions at a time, in this process."""
    import torch

    import lmscope

    torch.set_num_threads(2)
    lm = lmscope.load(model)
    words = " ".join(t.split()[0] for t in lmscope.data.iter_texts("wiki") if t.split())
    ids = lm.tokenizer(words)["input_ids"][:tokens]
    prompt = lm.tokenizer.decode(ids, skip_special_tokens=True)
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    result = lmscope.logit_lens(lm, prompt, lmscope.LensConfig(top_k=5, chunk=chunk))
    return {"chunk": chunk, "tokens": len(result.tokens), "seconds": time.perf_counter() - start,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "loaded_mb": loaded,
            "top": result.top_token()}


def main() -> None:
    """Run both settings in subprocesses and write the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=5000)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one chunk size
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one_run(args.model, args.tokens, args.one)))
        return
    rows = []
    for chunk in (256, args.tokens):  # chunked (the default) vs every position at once (before)
        out = subprocess.run([sys.executable, __file__, "--model", args.model, "--tokens", str(args.tokens),
                              "--one", str(chunk)], capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    lines = [f"# Logit lens memory: {args.model}, {rows[0]['tokens']}-token prompt", "",
             f"{platform.processor() or platform.machine()}, torch threads 2, `python bench/bench_lens_memory.py "
             f"--model {args.model} --tokens {args.tokens}`", "",
             "| positions per chunk | peak RSS (MiB) | after loading (MiB) | seconds | top token |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['chunk']} | {r['peak_mb']:.0f} | {r['loaded_mb']:.0f} | {r['seconds']:.1f} | {r['top']!r} |"
              for r in rows]
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"lens-memory-{args.model}.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
