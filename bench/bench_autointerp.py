"""Autointerp throughput with the offline explainer: seconds per unit for explaining and for each scorer, units/hour.

Runs the real pipeline (`autointerp`) on the planted units (a known meaning: the positive control) and random
directions (none: the negative control) of one layer, the explainer and scorer one local model, and times every call
the pipeline makes to it. Writes bench/results/autointerp-<explainer>-<device>.md with the per-stage table and the
controls' scores (issue 27's targets: >= 60 units/hour for explain + detection + fuzzing; planted mean detection
AUROC >= 0.85, random 0.5 +- 0.1).

    python bench/bench_autointerp.py [--model smollm2-135m] [--layer 15] [--explainer qwen2.5-coder-1.5b]
        [--kinds planted random] [--n-units 8] [--dtype auto] [--out out/bench-autointerp]

--dtype auto is what ``lmscope autointerp`` loads the explainer in: bfloat16 on a CPU with native bfloat16, float32
where bfloat16 is emulated (AVX2 only). The table's file name says the dtype, and the page whether the CPU has
native bfloat16.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

import lmscope  # noqa: E402
from lmscope.methods.autointerp import LocalBackend, SampleConfig, ScoreConfig, autointerp  # noqa: E402
from lmscope.model.precision import bfloat16_is_fast, bfloat16_slowdown, speed_dtype  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
STAGES = {"explain": "explain", "simulate_many": "simulation", "detect_many": "detection", "fuzz_many": "fuzzing"}


class Timed:
    """A backend whose every stage call is timed (seconds summed per stage, calls counted)."""

    def __init__(self, backend):
        self.backend, self.seconds, self.calls = backend, defaultdict(float), defaultdict(int)

    def __getattr__(self, name):
        attr = getattr(self.backend, name)
        if name not in STAGES:
            return attr

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self.seconds[STAGES[name]] += time.perf_counter() - start
                self.calls[STAGES[name]] += 1
        return timed


def table(timed: Timed, units: int, harvest_s: float) -> list[str]:
    per = {stage: timed.seconds[stage] / units for stage in STAGES.values()}
    rows = ["| stage | calls | s / unit | units / hour |", "|---|---|---|---|"]
    for stage, s in per.items():
        speed = f"{s:.1f} | {3600 / s:.0f}" if s else "- | -"
        rows.append(f"| {stage} | {timed.calls[stage]} | {speed} |")
    for name, parts in (("explain + detection + fuzzing", ("explain", "detection", "fuzzing")),
                        ("explain + all three scorers", tuple(per))):
        s = sum(per[p] for p in parts)
        rows.append(f"| **{name}** | | {s:.1f} | **{3600 / s:.0f}** |")
    rows.append(f"| excerpts (harvest + units, once per run) | | {harvest_s:.0f} s in all | |")
    return rows


def command(args) -> str:
    """The options of this run as a command line."""
    def value(v):
        return " ".join(map(str, v)) if isinstance(v, list) else str(v)
    return " ".join(f"--{k.replace('_', '-')} {value(v)}" for k, v in vars(args).items())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--layer", type=int, default=15)
    p.add_argument("--explainer", default="qwen2.5-coder-1.5b")
    p.add_argument("--kinds", nargs="+", default=["planted", "random"])
    p.add_argument("--n-units", type=int, default=8)
    p.add_argument("--tokens", type=int, default=131072)
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    p.add_argument("--out", default="out/bench-autointerp")
    args = p.parse_args()
    torch.set_num_threads(2)
    if args.dtype == "auto":
        args.dtype = speed_dtype("cpu")
    lm = lmscope.load(args.model)
    explainer_lm = lmscope.load(args.explainer, dtype=args.dtype)
    timed = Timed(LocalBackend(explainer_lm))
    cfg = SampleConfig(kinds=tuple(args.kinds), n_units=args.n_units, tokens=args.tokens, fit_tokens=32768)
    start = time.perf_counter()
    result = autointerp(lm, lmscope.Site(args.layer, "resid_post"), cfg, ScoreConfig(), timed, timed, args.out,
                        names=(args.explainer, args.explainer))
    total = time.perf_counter() - start
    units = len(result.records)
    harvest_s = total - sum(timed.seconds.values())
    s = result.summary()
    lines = [f"# Autointerp throughput: explainer {args.explainer} ({args.dtype}), subject {args.model} "
             f"resid_post.{args.layer}", "",
             f"{platform.machine()}, {torch.get_num_threads()} threads, "
             f"{'native' if bfloat16_is_fast('cpu') else 'no native'} bfloat16 (a bfloat16 matmul takes "
             f"{bfloat16_slowdown('cpu'):.1f}x float32's), {units} units ({', '.join(args.kinds)}); "
             f"each unit: {cfg.explain_examples} excerpts explained, {cfg.score_top} top + {cfg.score_quantiles} "
             f"quantile + {cfg.score_random} random excerpts of a {cfg.window}-token window scored. "
             f"`python bench/bench_autointerp.py {command(args)}`.",
             "", *table(timed, units, harvest_s), "",
             f"Whole run {total / 60:.1f} min. Target: at least 60 units/hour for explain + detection + fuzzing.", "",
             "## Controls (the same run)", "",
             "| kind | units | simulation r | detection AUROC | fuzzing AUROC | distinct explanations |",
             "|---|---|---|---|---|---|"]
    for kind, v in s["kinds"].items():
        cells = [f"{v['scorers'][n]['mean']:.3f}" if v["scorers"][n]["mean"] is not None else "-"
                 for n in ("simulation", "detection", "fuzzing")]
        lines.append(f"| {kind} | {v['units']} | {' | '.join(cells)} | {v['distinct']}/{v['units']} |")
    c = s["controls"]
    lines += ["", f"Planted mean detection >= 0.85: {c['planted_ok']}; random within 0.5 +- 0.1: {c['random_ok']}.",
              "", "Explanations:", ""]
    lines += [f"- {r['kind']} {r['unit']}{' (' + r['label'] + ')' if r.get('label') else ''}: "
              f"{r['explanation']!r} (detection {r.get('detection')}, fuzzing {r.get('fuzzing')})"
              for r in result.records]
    lines += ["", f"Measured {time.strftime('%Y-%m-%d')} on this CPU."]
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"autointerp-{args.explainer}-{args.dtype}-cpu.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
