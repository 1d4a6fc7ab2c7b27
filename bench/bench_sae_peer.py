"""lmscope and SAELens side by side in one run: the same ReLU + L1 dictionary on the same model, site and text.

Speed: end to end (tokenise, forward, shuffle, train) on ``--tokens`` tokens, harvest, and training from the cache.
Quality: both libraries train from their own cache for ``--epochs`` passes; every SAE is then scored by one
evaluator (lmscope's ``evaluate_sae`` on held-out text: FVE, L0, CE recovered), lmscope at several L1
coefficients from one sweep so that its FVE can be read at SAELens' L0. Writes bench/results/sae-vs-saelens-cpu.md.

    python bench/bench_sae_peer.py [--tokens 204800] [--epochs 6] [--eval-tokens 32768]

SAELens runs in its own virtual environment (bench/peers/setup_saelens.sh, made here when missing), as a
subprocess before lmscope's phases; the matmul probe before and after says whether the machine's speed held.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

import lmscope  # noqa: E402
from lmscope.methods.sae import (  # noqa: E402
    EvalConfig,
    HarvestConfig,
    Job,
    SaeConfig,
    TrainConfig,
    evaluate_sae,
    harvest,
    load_sae,
    train_saes,
)

BENCH = Path(__file__).resolve().parent
PEERS = BENCH / "peers"
PEER_PYTHON = PEERS / ".venv-saelens" / "bin" / "python"
LAYER, RATIO, BATCH_TOKENS = 15, 8, 4096
LR, L1, SAELENS_L1 = 4e-4, (2.5, 5.0, 10.0, 20.0), 5.0


def probe_gflops(repeats: int = 20) -> float:
    """GFLOP/s of the encoder's matmul (4096 x 576 @ 576 x 4608) right now: the machine's speed drifts."""
    x, w = torch.randn(BATCH_TOKENS, 576), torch.randn(576, 576 * RATIO)
    x @ w
    start = time.perf_counter()
    for _ in range(repeats):
        x @ w
    return 2 * BATCH_TOKENS * 576 * 576 * RATIO * repeats / (time.perf_counter() - start) / 1e9


def saelens(args: argparse.Namespace, save: Path, phases: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> dict:
    """SAELens' phases (default all three) in its own environment; its JSON line."""
    if not PEER_PYTHON.exists():
        subprocess.run(["bash", str(PEERS / "setup_saelens.sh")], check=True)
    cmd = [str(PEER_PYTHON), str(PEERS / "saelens_bench.py"), "--tokens", str(args.tokens), "--epochs",
           str(args.epochs), "--threads", str(args.threads), "--lr", str(LR), "--l1", str(SAELENS_L1),
           "--save", str(save), *extra] + (["--phases", *phases] if phases else [])
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def train_config(epochs: int) -> TrainConfig:
    """SAELens' settings: Adam at a constant learning rate, L1 warm-up over 5% of the steps, clip 1.0."""
    return TrainConfig(batch_tokens=BATCH_TOKENS, epochs=epochs, lr=LR, warmup_steps=0, decay_fraction=0.0,
                       l1_warmup_fraction=0.05, grad_clip=1.0, checkpoint_every=100_000)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def lmscope_runs(lm, args: argparse.Namespace, work: Path) -> tuple[dict, list[Path]]:
    """End to end, harvest, and the L1 sweep from the cache; tokens/s and the sweep's SAE folders."""
    site = lmscope.Site(LAYER, "resid_post")
    hcfg = HarvestConfig(tokens=args.tokens, seq_len=128, batch_size=32, buffer_rows=65_536)
    one = [Job(site, SaeConfig("relu", ratio=RATIO, l1_coefficient=SAELENS_L1))]
    seconds, _ = timed(lambda: train_saes(lm, one, hcfg, train_config(1), work / "e2e"))
    row = {"end_to_end": args.tokens / seconds}
    seconds, _ = timed(lambda: harvest(lm, [site], hcfg, work / "cache"))
    row["harvest"] = args.tokens / seconds
    seconds, _ = timed(lambda: train_saes(lm, one, hcfg, train_config(1), work / "one", cache=work / "cache"))
    row["one_from_cache"] = args.tokens / seconds
    sweep = [Job(site, SaeConfig("relu", ratio=RATIO, l1_coefficient=c)) for c in L1]
    seconds, folders = timed(lambda: train_saes(lm, sweep, hcfg, train_config(args.epochs), work / "sweep",
                                                cache=work / "cache"))
    row["sweep_from_cache"] = args.tokens * args.epochs / seconds
    return row, folders


def quality(lm, folders: dict[str, Path], tokens: int) -> dict[str, dict]:
    """lmscope's evaluation of every SAE on the held-out split."""
    site, cfg = lmscope.Site(LAYER, "resid_post"), EvalConfig(tokens=tokens)
    return {name: evaluate_sae(lm, load_sae(folder), site, cfg).summary() for name, folder in folders.items()}


def at_l0(rows: list[dict], l0: float, key: str) -> float:
    """``key`` of lmscope's sweep interpolated linearly in log L0 at ``l0`` (nan outside the sweep's range)."""
    pts = sorted((math.log(r["l0"]), r[key]) for r in rows)
    x = math.log(l0)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return math.nan


def table(args, peer: dict, ours: dict, scores: dict, probes: tuple[float, float]) -> str:
    """The markdown page."""
    p = {k: peer[k]["tokens_per_s"] for k in ("harvest", "train_from_cache", "end_to_end")}
    cache_ours = ours["sweep_from_cache"] * len(L1)  # SAE-tokens/s: every dictionary of the sweep per step
    lines = [
        "# SAE: lmscope and SAELens in one run (smollm2-135m, resid_post.15, 576 -> 4608, ReLU + L1)", "",
        f"{platform.machine()}, {args.threads} threads, float32 model, context 128, batch 4,096 tokens, Adam lr {LR} "
        f"constant, L1 warm-up 5% of the steps, clip 1.0, inputs scaled to E|x| = sqrt(d). Command: `python "
        f"bench/bench_sae_peer.py --tokens {args.tokens} --epochs {args.epochs} --eval-tokens {args.eval_tokens}`. "
        f"SAELens {peer['versions']['sae-lens']} (its own venv, bench/peers/) ran first, then lmscope; matmul probe "
        f"{probes[0]:.0f} GFLOP/s before, {probes[1]:.0f} after.", "",
        "## Speed (tokens/s)", "",
        "| phase | SAELens | lmscope | lmscope / SAELens |", "|---|---|---|---|",
        f"| end to end, {args.tokens:,} tokens, one SAE (L1 {SAELENS_L1}) | {p['end_to_end']:.0f} | "
        f"{ours['end_to_end']:.0f} | {ours['end_to_end'] / p['end_to_end']:.2f}x |",
        f"| harvest to the disk cache | {p['harvest']:.0f} | {ours['harvest']:.0f} | "
        f"{ours['harvest'] / p['harvest']:.2f}x |",
        f"| train from the cache, one SAE | {p['train_from_cache']:.0f} | {ours['one_from_cache']:.0f} | "
        f"{ours['one_from_cache'] / p['train_from_cache']:.2f}x |",
        f"| train from the cache, SAE-tokens/s (SAELens one SAE, lmscope {len(L1)} in one pass) | "
        f"{p['train_from_cache']:.0f} | {cache_ours:.0f} | {cache_ours / p['train_from_cache']:.2f}x |", "",
        _bound(p, ours), "",
        f"## Quality at equal L0 ({args.tokens * args.epochs:,} training tokens: {args.epochs} passes over a "
        f"{args.tokens:,}-token cache; evaluated by lmscope on {args.eval_tokens:,} held-out tokens of wiki/test, "
        "first and sink positions left out)", "",
        "| SAE | L1 | L0 | FVE | CE recovered | dead % |", "|---|---|---|---|---|---|"]
    for name, s in scores.items():
        l1 = SAELENS_L1 if name == "SAELens" else float(name.split()[-1])
        lines.append(f"| {name} | {l1} | {s['l0']:.1f} | {s['fve']:.3f} | {s['ce_recovered']:.3f} | "
                     f"{100 * s['dead']:.1f} |")
    lines += ["", equal_l0(scores)]
    return "\n".join(lines) + "\n"


def _bound(p: dict, ours: dict) -> str:
    """What bounds lmscope's end-to-end rate on this machine: its harvest and its training run in sequence."""
    bound = 1 / (1 / ours["harvest"] + 1 / ours["one_from_cache"])
    return (f"lmscope's end to end is its harvest and its training in sequence (one process, every core busy in "
            f"each): at most 1 / (1/{ours['harvest']:.0f} + 1/{ours['one_from_cache']:.0f}) = {bound:.0f} tokens/s "
            f"here, {bound / p['end_to_end']:.2f}x SAELens' end to end; the harvest itself is the model's forward "
            "pass truncated after the site (bench_sae.py: 0.91x the bare Hugging Face forward in float32).")


def equal_l0(scores: dict[str, dict]) -> str:
    """lmscope's sweep at SAELens' L0: interpolated inside the sweep's range, else the dictionaries that dominate
    (at most SAELens' L0 and at least its FVE and CE recovered: more latents only add to both)."""
    sweep = {n: s for n, s in scores.items() if n != "SAELens"}
    ref = scores["SAELens"]
    fve, ce = at_l0(list(sweep.values()), ref["l0"], "fve"), at_l0(list(sweep.values()), ref["l0"], "ce_recovered")
    if not math.isnan(fve):
        return (f"lmscope's sweep read at SAELens' L0 ({ref['l0']:.1f}), linear in log L0: FVE {fve:.3f} (SAELens "
                f"{ref['fve']:.3f}), CE recovered {ce:.3f} (SAELens {ref['ce_recovered']:.3f}).")
    better = [n for n, s in sweep.items() if s["l0"] <= ref["l0"] and s["fve"] >= ref["fve"]
              and s["ce_recovered"] >= ref["ce_recovered"]]
    if better:
        return (f"SAELens' L0 ({ref['l0']:.1f}) is outside lmscope's sweep, but {', '.join(better)} has a lower L0 "
                f"and a higher FVE and CE recovered: it does better with fewer active latents.")
    return f"SAELens' L0 ({ref['l0']:.1f}) is outside lmscope's sweep and no lmscope dictionary dominates it."


SWEEP_L1 = (1.0, 1.5, 2.5, 3.5, 5.0, 7.0, 10.0, 20.0)


def speed(args: argparse.Namespace, work: Path) -> None:
    """End to end only, in rounds; in each, per SAE precision: SAELens (one SAE), lmscope (one SAE), lmscope (a sweep
    of 8 in one pass). The model in ``--model-dtype`` for both libraries; "autocast" runs both libraries' SAE
    matmuls in bfloat16 (SAELens' ``autocast``, lmscope's ``TrainConfig.autocast``). Writes
    bench/results/sae-vs-saelens-speed-<dtype>-<tokens>-cpu.md."""
    lm = lmscope.load("smollm2-135m", dtype=args.model_dtype)
    site = lmscope.Site(LAYER, "resid_post")
    hcfg = HarvestConfig(tokens=args.tokens, seq_len=128, batch_size=32, buffer_rows=65_536)
    one = [Job(site, SaeConfig("relu", ratio=RATIO, l1_coefficient=SAELENS_L1))]
    eight = [Job(site, SaeConfig("relu", ratio=RATIO, l1_coefficient=c)) for c in SWEEP_L1]
    name = f"sae-vs-saelens-speed-{args.model_dtype}-{args.tokens // 1000}k-cpu.md"
    rows, page = [], ""
    for i in range(args.rounds):
        for precision in args.sae_precision:
            autocast, tag = precision == "autocast", f"{i}-{precision}"
            cfg = replace(train_config(1), autocast=autocast)
            probe = probe_gflops()
            peer = saelens(args, work / f"s{tag}", ("end_to_end",),
                           ("--model-dtype", args.model_dtype, *(["--autocast"] if autocast else [])))
            t_one, _ = timed(lambda tag=tag, cfg=cfg: train_saes(lm, one, hcfg, cfg, work / f"e{tag}"))
            t_eight = math.nan
            if precision in args.sweep_precision:
                t_eight, _ = timed(lambda tag=tag, cfg=cfg: train_saes(lm, eight, hcfg, cfg, work / f"w{tag}"))
            rows.append((i + 1, precision, probe, peer["end_to_end"]["seconds"], t_one, t_eight))
            page = speed_page(args, rows)  # rewritten after every row: a stopped run keeps what it measured
            (BENCH / "results" / name).write_text(page)
            print(rows[-1], flush=True)
    print(page)


def speed_page(args: argparse.Namespace, rows: list[tuple]) -> str:
    """The markdown page of :func:`speed`: one row per round and precision, then the totals per precision."""
    steps = args.tokens // BATCH_TOKENS
    lines = ["# SAE end to end: lmscope and SAELens in rounds (smollm2-135m, resid_post.15, 576 -> 4608, ReLU + L1)",
             "", f"{platform.machine()}, {args.threads} threads, {args.model_dtype} model, {args.tokens:,} tokens "
             f"({steps} steps), batch 4,096, context 128, same settings as sae-vs-saelens-cpu.md. SAE matmuls: "
             "float32, or bfloat16 under autocast in both libraries (weights and Adam float32). Command: "
             f"`python bench/bench_sae_peer.py --speed --model-dtype {args.model_dtype} --tokens {args.tokens} "
             f"--rounds {args.rounds} --sae-precision {' '.join(args.sae_precision)} --sweep-precision "
             f"{' '.join(args.sweep_precision)}`. Eight separate SAELens runs cost eight times one (each pays the "
             "same forward passes); lmscope's eight (L1 " + ", ".join(f"{c:g}" for c in SWEEP_L1) + ") share one.",
             "", "| round | SAE matmuls | matmul GFLOP/s before | SAELens, one SAE (s) | lmscope, one SAE (s) | "
             "speed-up | lmscope, 8 SAEs in one pass (s) | vs 8 SAELens runs |", "|---|---|---|---|---|---|---|---|"]
    for r, precision, g, p, o, e in rows:
        sweep = f"{e:.0f} | {8 * p / e:.2f}x" if e == e else "- | -"
        lines.append(f"| {r} | {precision} | {g:.0f} | {p:.0f} | {o:.0f} | {p / o:.2f}x | {sweep} |")
    lines.append("")
    for precision in args.sae_precision:
        mine = [row for row in rows if row[1] == precision]
        if not mine:  # not measured yet (the page is rewritten after every row)
            continue
        peer_s, one_s = sum(r[3] for r in mine), sum(r[4] for r in mine)
        text = f"SAE matmuls {precision}, over all rounds: one SAE {peer_s / one_s:.2f}x"
        swept = [r for r in mine if r[5] == r[5]]
        if swept:
            text += f", eight SAEs {8 * sum(r[3] for r in swept) / sum(r[5] for r in swept):.2f}x"
        lines += [text + ".", ""]
    return "\n".join(lines)


def main() -> None:
    """Run SAELens, then lmscope, evaluate every SAE, write the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=204_800)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--eval-tokens", type=int, default=32_768)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--speed", action="store_true", help="end to end only, in rounds (see speed())")
    parser.add_argument("--rounds", type=int, default=2, help="--speed: rounds")
    parser.add_argument("--model-dtype", default="float32", choices=("float32", "bfloat16"),
                        help="--speed: the language model's dtype in both libraries")
    parser.add_argument("--sae-precision", nargs="+", default=["float32"], choices=("float32", "autocast"),
                        help="--speed: SAE matmul precisions to run in each round (both libraries alike)")
    parser.add_argument("--sweep-precision", nargs="*", default=["float32", "autocast"],
                        help="--speed: the precisions for which lmscope's sweep of 8 runs too")
    parser.add_argument("--from-json", action="store_true", help="only rewrite the page from the saved JSON")
    args = parser.parse_args()
    if args.from_json:
        saved = json.loads((BENCH / "results" / "sae-vs-saelens-cpu.json").read_text())
        page = table(args, saved["saelens"], saved["lmscope"], saved["quality"], tuple(saved["probes"]))
        (BENCH / "results" / "sae-vs-saelens-cpu.md").write_text(page)
        return print(page)
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-sae-peer-"))
    if args.speed:
        try:
            return speed(args, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    try:
        before = probe_gflops()
        peer = saelens(args, work / "saelens")
        lm = lmscope.load("smollm2-135m")
        ours, folders = lmscope_runs(lm, args, work)
        after = probe_gflops()
        named = {"SAELens": work / "saelens" / "train_from_cache",
                 **{f"lmscope L1 {c}": f for c, f in zip(L1, folders)}}
        scores = quality(lm, named, args.eval_tokens)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    page = table(args, peer, ours, scores, (before, after))
    (BENCH / "results").mkdir(exist_ok=True)
    (BENCH / "results" / "sae-vs-saelens-cpu.md").write_text(page)
    (BENCH / "results" / "sae-vs-saelens-cpu.json").write_text(json.dumps(
        {"saelens": peer, "lmscope": ours, "quality": scores, "probes": [before, after]}, indent=1, default=str))
    print(page)


if __name__ == "__main__":
    main()
