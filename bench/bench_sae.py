"""SAE throughput on one model and site: harvest vs the bare truncated forward, training from the cache, end to end,
and a sweep of SAEs in one pass vs the same SAEs one by one.

Each dtype runs in this process one after the other, on the same token batches. Writes
bench/results/sae-<model>-cpu.md; peers' figures (SAELens) come from bench/peers/ and are quoted beside it.

    python bench/bench_sae.py [--model smollm2-135m] [--layer 15] [--tokens 65536] [--dtypes float32 bfloat16]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

import lmscope  # noqa: E402
from lmscope.data.corpus import iter_texts, token_batches  # noqa: E402
from lmscope.methods.sae import HarvestConfig, Job, SaeConfig, TrainConfig, harvest, train_saes  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SWEEP_K = (16, 24, 32, 48, 64, 96, 128, 192)


def bare_forward(lm, cfg: HarvestConfig, layer: int) -> float:
    """Tokens/s of the Hugging Face model truncated after block ``layer`` (its own forward, no hooks)."""
    blocks = lm.block_list()
    kept = torch.nn.ModuleList(list(blocks)[:layer + 1])
    parent = lm.model.get_submodule(lm.layout.spec.blocks.rpartition(".")[0])
    name = lm.layout.spec.blocks.rpartition(".")[2]
    batches = list(token_batches(lm.tokenizer, iter_texts(cfg.corpus, split=cfg.split), cfg.seq_len,
                                 cfg.batch_size, max_tokens=cfg.tokens))
    setattr(parent, name, kept)
    try:
        start = time.perf_counter()
        with torch.no_grad():
            for ids in batches:
                parent(input_ids=ids, use_cache=False)
        return sum(b.numel() for b in batches) / (time.perf_counter() - start)
    finally:
        setattr(parent, name, blocks)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def one_dtype(model: str, dtype: str, layer: int, tokens: int, work: Path) -> dict:
    """Every measure for one model dtype (the SAE itself trains in float32)."""
    lm = lmscope.load(model, dtype=dtype)
    site = lmscope.Site(layer, "resid_post")
    hcfg = HarvestConfig(tokens=tokens, seq_len=128, batch_size=32, buffer_rows=32_768)
    tcfg = TrainConfig(batch_tokens=4096, checkpoint_every=10_000)
    one = [Job(site, SaeConfig("topk", ratio=8, k=32))]
    sweep = [Job(site, SaeConfig("topk", ratio=8, k=k)) for k in SWEEP_K]
    row = {"dtype": dtype, "bare": bare_forward(lm, hcfg, layer)}
    start = time.perf_counter()
    manifest = harvest(lm, [site], hcfg, work / f"cache-{dtype}")
    row["harvest"] = tokens / (time.perf_counter() - start)
    rows_kept = sum(manifest["shards"].values())  # special tokens are left out
    row["cached"] = rows_kept / timed(lambda: train_saes(lm, one, hcfg, tcfg, work / f"c-{dtype}",
                                                         cache=work / f"cache-{dtype}"))
    t_one = timed(lambda: train_saes(lm, one, hcfg, tcfg, work / f"e-{dtype}"))
    row["end_to_end"] = tokens / t_one
    row["sweep_s"] = timed(lambda: train_saes(lm, sweep, hcfg, tcfg, work / f"s-{dtype}"))
    row["separate_s"] = len(SWEEP_K) * t_one
    return row


def main() -> None:
    """Measure and write the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--tokens", type=int, default=65_536)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-sae-"))
    try:
        rows = [one_dtype(args.model, d, args.layer, args.tokens, work) for d in args.dtypes]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [f"# SAE throughput: {args.model}, resid_post.{args.layer}, 576 -> 4608 (ratio 8), TopK k=32", "",
             f"{platform.machine()}, {args.threads} threads, {args.tokens} tokens, context 128, batch 4096 tokens. "
             f"`python bench/bench_sae.py --model {args.model} --layer {args.layer} --tokens {args.tokens}`. "
             "Tokens/s; the sweep trains 8 SAEs (k = " + ", ".join(map(str, SWEEP_K)) + ") on one stream.", "",
             "| model dtype | bare forward | harvest | harvest / bare | train from cache | end to end | "
             "sweep of 8 (s) | 8 single runs (s) | speed-up |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['dtype']} | {r['bare']:.0f} | {r['harvest']:.0f} | {r['harvest'] / r['bare']:.2f} | "
              f"{r['cached']:.0f} | {r['end_to_end']:.0f} | {r['sweep_s']:.0f} | {r['separate_s']:.0f} | "
              f"{r['separate_s'] / r['sweep_s']:.1f}x |" for r in rows]
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"sae-{args.model}-cpu.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
