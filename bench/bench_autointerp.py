"""Autointerp throughput with the offline explainer: seconds per unit for explaining and for each scorer, units/hour.

Runs the real pipeline (`autointerp`) on the planted units (a known meaning: the positive control) and random
directions (none: the negative control) of one layer, the explainer and scorer one local model, and times every call
the pipeline makes to it. Writes bench/results/autointerp-<explainer>-<device>.md with the per-stage table and the
controls' scores (issue 27's targets: >= 60 units/hour for explain + detection + fuzzing; planted mean detection
AUROC >= 0.85, random 0.5 +- 0.1).

    python bench/bench_autointerp.py [--model smollm2-135m] [--layer 15] [--explainer qwen2.5-coder-1.5b]
        [--kinds planted random] [--n-units 8] [--dtype auto] [--out out/bench-autointerp]
    python bench/bench_autointerp.py --from-run out/autointerp/RUN [RUN2=sae-tied ...]   # runs' tables, not rerun

The times are the ones every unit's record keeps (explain and each scorer, wall clock, and when it finished);
--from-run reads them from ``lmscope autointerp`` folders, finished or not (a long comparison, two runs at once on
one machine: their wall time counted once), and names the machine(s) they ran on.

--dtype auto is what ``lmscope autointerp`` loads the explainer in: bfloat16 on a CPU with native bfloat16, float32
where bfloat16 is emulated (AVX2 only). The table's file name says the dtype, and the page whether the CPU has
native bfloat16.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

import lmscope  # noqa: E402
from lmscope.methods.autointerp import LocalBackend, SampleConfig, ScoreConfig, autointerp, runs_so_far  # noqa: E402
from lmscope.model.precision import bfloat16_is_fast, bfloat16_slowdown, speed_dtype  # noqa: E402
from lmscope.viz.autointerp import progress_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def table(timing: dict, harvest_s: float | None) -> list[str]:
    """The per-stage table of a run's timing (:meth:`AutointerpResult.summary`'s ``timing``)."""
    rows = ["| stage | s / unit | units / hour |", "|---|---|---|"]
    for stage, s in timing["stages"].items():
        rows.append(f"| {stage} | {s:.1f} | {3600 / s:.0f} |" if s else f"| {stage} | - | - |")
    cheap = [timing["stages"].get(n, 0.0) for n in ("explain", "detection", "fuzzing")]
    rows.append(f"| **explain + detection + fuzzing** | {sum(cheap):.1f} | **{3600 / sum(cheap):.0f}** |")
    rows.append(f"| **explain + every scorer run** | {timing['seconds_per_unit']:.1f} | "
                f"**{timing['units_per_hour']:.0f}** |")
    if harvest_s is not None:
        rows.append(f"| excerpts (harvest + units, once per run) | {harvest_s:.0f} s in all | |")
    return rows


def command(args) -> str:
    """The options of this run as a command line."""
    def value(v):
        return " ".join(map(str, v)) if isinstance(v, list) else str(v)
    return " ".join(f"--{k.replace('_', '-')} {value(v)}" for k, v in vars(args).items())


def measure(args):
    """Run the pipeline on ``args``' units; (result, seconds outside the units: harvest, unit sets, loading)."""
    torch.set_num_threads(2)
    if args.dtype == "auto":
        args.dtype = speed_dtype("cpu")
    lm = lmscope.load(args.model)
    explainer = LocalBackend(lmscope.load(args.explainer, dtype=args.dtype))
    cfg = SampleConfig(kinds=tuple(args.kinds), n_units=args.n_units, tokens=args.tokens, fit_tokens=32768)
    start = time.perf_counter()
    result = autointerp(lm, lmscope.Site(args.layer, "resid_post"), cfg, ScoreConfig(), explainer, explainer,
                        args.out, names=(args.explainer, args.explainer))
    timing = result.summary()["timing"]
    return result, time.perf_counter() - start - timing["seconds_per_unit"] * timing["units"]


def header(result, args) -> list[str]:
    """The table's title and what was run (a measured run, or a finished run read back)."""
    cfg, s = result.config, result.summary()
    kinds = ", ".join(f"{v['units']} {k}" for k, v in s["kinds"].items())
    how = (f"Read from the runs {', '.join(args.from_run)}" if args.from_run else
           f"`python bench/bench_autointerp.py {command(args)}`; {'native' if bfloat16_is_fast('cpu') else 'no native'}"
           f" bfloat16 here (a bfloat16 matmul takes {bfloat16_slowdown('cpu'):.1f}x float32's)")
    return [f"# Autointerp throughput: explainer {result.explainer}, subject {result.model} "
            f"{', '.join(sorted(set(result.sites.values())))}", "",
            f"{kinds}; each unit: {cfg.explain_examples} excerpts explained, {cfg.score_top} top + "
            f"{cfg.score_quantiles} quantile + {cfg.score_random} random excerpts of a {cfg.window}-token window "
            f"scored. Run on: {'; '.join(f'{m} ({n} units)' for m, n in s['timing']['scored_on'].items())}. {how}."]


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
    p.add_argument("--from-run", nargs="+", metavar="RUN", help="lmscope autointerp folders (RUN=LABEL names that "
                   "run's SAE features; runs at once on one machine count their wall time once): write their table "
                   "from what they have scored so far, run nothing")
    args = p.parse_args()
    if args.from_run:
        result, harvest_s = runs_so_far(args.from_run), None
    else:
        result, harvest_s = measure(args)
    s = result.summary()
    if not s["timing"]["units"]:
        raise SystemExit(f"{args.from_run}: no unit of this run was timed (written before units kept their times)")
    wall = s["timing"].get("wall")
    lines = [*header(result, args), "", *([progress_text(s["progress"]), ""] if s["progress"] else []),
             *table(s["timing"], harvest_s), "",
             *([f"Wall time, runs at once on the machine counted once: {wall['units']} units in {wall['hours']:.2f} "
                f"hours while any was being scored, **{wall['units_per_hour']:.0f} units an hour**.", ""]
               if wall and wall.get("units_per_hour") else []),
             "Target: at least 60 units/hour for explain + detection + fuzzing.", "",
             "## Controls and kinds (the same run)", "",
             "| kind | units | simulation r | detection AUROC | fuzzing AUROC | distinct explanations |",
             "|---|---|---|---|---|---|"]
    for kind, v in s["kinds"].items():
        cells = [f"{v['scorers'][n]['mean']:.3f}" if v["scorers"][n]["mean"] is not None else "-"
                 for n in ("simulation", "detection", "fuzzing")]
        lines.append(f"| {kind} | {v['units']} | {' | '.join(cells)} | {v['distinct']}/{v['units']} |")
    c = s["controls"]
    lines += ["", f"Planted mean detection >= 0.85: {c['planted_ok']}; random within 0.5 +- 0.1: {c['random_ok']}."]
    if len(result.records) <= 40:
        lines += ["", "Explanations:", ""]
        lines += [f"- {r['kind']} {r['unit']}{' (' + r['label'] + ')' if r.get('label') else ''}: "
                  f"{r['explanation']!r} (detection {r.get('detection')}, fuzzing {r.get('fuzzing')})"
                  for r in result.records]
    lines += ["", f"Written {time.strftime('%Y-%m-%d')}."]
    RESULTS.mkdir(exist_ok=True)
    dtype = "-".join(sorted({m.split(", ")[1] for m in s["timing"]["scored_on"] if m.count(", ") >= 2})) or "unknown"
    device = "gpu" if any("cuda" in m.lower() or "nvidia" in m.lower() for m in s["timing"]["scored_on"]) else "cpu"
    path = RESULTS / f"autointerp-{result.explainer}-{dtype}-{device}.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
