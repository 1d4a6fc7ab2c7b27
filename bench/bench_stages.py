"""Lesion sweep: lmscope's (each lesioned pass starts from the clean stream cached under it) vs the naive one
(2L - 1 full forward passes per batch), same tokens, in one run.

Prints both times, their ratio (target: at most 0.6) and the largest difference of the summed metrics, and writes
the table to bench/results/stages-<model>-<device>.md.

    python bench/bench_stages.py [--model smollm2-135m] [--tokens 1024]
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
from lmscope.data.corpus import iter_texts, token_batches  # noqa: E402
from lmscope.methods.stages import MODES  # noqa: E402
from lmscope.methods.stages.lesion import lesion_sweep  # noqa: E402
from lmscope.methods.stages.metrics import Reference, Sums, compare, next_logits  # noqa: E402
from lmscope.model.hooks import capture  # noqa: E402
from lmscope.model.sites import Site  # noqa: E402
from lmscope.model.surgery import delete_blocks, swap_blocks  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


@torch.no_grad()
def cached_sweep(lm, ids):
    """lmscope: one clean pass caching the residual stream, then every lesion from the stream under it."""
    sites = lm.sites("resid_post")
    with lm.hooks(*(capture(s) for s in sites)) as cache:
        ref = Reference.of(next_logits(lm, ids))
    resid = {s.layer: cache[s] for s in sites}
    sums = Sums()
    lesion_sweep(lm, ids, resid, ref, ids[:, 1:], sums)
    return sums.sums


@torch.no_grad()
def naive_sweep(lm, ids):
    """Every lesion as a full forward pass."""
    ref = Reference.of(next_logits(lm, ids))
    targets, out = ids[:, 1:], {}
    for mode, lesion, n in (("delete", delete_blocks, lm.n_layers), ("swap", swap_blocks, lm.n_layers - 1)):
        rows = []
        for layer in range(n):
            with lesion(lm, layer):
                rows.append(torch.stack([v.double().cpu() for v in compare(ref, next_logits(lm, ids), targets)]))
        out[mode] = torch.stack(rows)
    return out


def main() -> None:
    """Time both sweeps on the same batches and print / write the comparison."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default: 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lm = lmscope.load(args.model, device=args.device)
    batches = [b.to(lm.device) for b in token_batches(lm.tokenizer, iter_texts("wiki", split="test"), seq_len=128,
                                                       batch_size=8, max_tokens=args.tokens)]
    _ = lm.run_with_cache(batches[0][:1, :8], [Site(0, "resid_post")])  # warm-up
    t = time.perf_counter()
    fast = [cached_sweep(lm, b) for b in batches]
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    slow = [naive_sweep(lm, b) for b in batches]
    t_slow = time.perf_counter() - t
    diff = max(float((f[m] - s[m]).abs().max()) for f, s in zip(fast, slow) for m in MODES)
    tokens = sum(b.numel() for b in batches)
    lines = [f"# Lesion sweep, {args.model} on {args.device} ({platform.node()}, torch {torch.__version__})", "",
             f"{tokens} tokens of the Wikipedia test split, {lm.n_layers} deletions + {lm.n_layers - 1} swaps, "
             f"{torch.get_num_threads()} threads", "",
             "| sweep | seconds | cost vs naive | max abs difference of the sums |", "|---|---|---|---|",
             f"| naive (2L - 1 full passes + the clean pass) | {t_slow:.1f} | 1.00 | |",
             f"| lmscope (from the cached clean stream) | {t_fast:.1f} | {t_fast / t_slow:.2f} | {diff:.2e} |"]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"stages-{args.model}-{args.device}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
