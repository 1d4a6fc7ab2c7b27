"""Correctness of lmscope on a CUDA device, on the tiny random models of every family (no download).

    python bench/device/gpu_check.py --out bench/results/gpu-check.md

Checks, each recorded as ok / FAIL with a detail, none stopping the others:
- every family: the wrapped model's logits equal the bare Hugging Face model's bit for bit on the GPU (float32 and
  bfloat16), with and without a capture hook;
- lens and causal trace run on the GPU and agree with the CPU (trace without noise: the same probabilities);
- a ROME edit on the GPU raises its target and undo restores the weights bit for bit;
- SAEs: harvest on the GPU equals the CPU activations (float tolerance); each architecture trains 40 steps with
  resampling / AuxK and reaches the CPU run's FVE; a zero-error splice changes no logit; a run killed and resumed
  on the GPU equals the uninterrupted one (or the nondeterminism is shown).
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import lmscope  # noqa: E402
from lmscope import Site, capture  # noqa: E402
from lmscope.methods.rome import EditRequest, RomeConfig, rome_edit  # noqa: E402
from lmscope.methods.sae import (  # noqa: E402
    EvalConfig,
    HarvestConfig,
    Job,
    SaeConfig,
    TrainConfig,
    evaluate_sae,
    load_sae,
    splice,
    train_saes,
)
from lmscope.methods.sae.harvest import ActivationStream  # noqa: E402
from lmscope.methods.trace import TraceConfig, causal_trace  # noqa: E402
from tests.helpers import FAMILY_NAMES, sharpen, tiny_model, tiny_tokenizer  # noqa: E402

ROWS: list[tuple[str, str, str]] = []
WORDS = ["The", "capital", "of", "France", "is", "Paris", "Eiffel", "Tower", "located", "in", "city", "the", "a"]
PROMPT, SUBJECT = "The Eiffel Tower is located in the city of", "Eiffel Tower"


def check(name: str):
    def wrap(fn):
        start = time.perf_counter()
        try:
            detail = fn() or ""
            ROWS.append((name, "ok", f"{detail} ({time.perf_counter() - start:.1f} s)"))
        except Exception as err:  # noqa: BLE001 - every failure is recorded, none stops the others
            traceback.print_exc()
            ROWS.append((name, "FAIL", f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"))
        return fn
    return wrap


def lm_on(family: str, device: str, dtype=torch.float32, sharp: bool = False):
    model = tiny_model(family).to(device=device, dtype=dtype)
    lm = lmscope.load((model, tiny_tokenizer()))
    return sharpen(lm) if sharp else lm


def corpus_file(folder: Path) -> str:
    rng = random.Random(0)
    words = WORDS + [f"w{i}" for i in range(60)]
    path = folder / "corpus.txt"
    path.write_text("\n\n".join(" ".join(rng.choices(words, k=rng.randint(5, 40))) for _ in range(300)))
    return str(path)


def run(dev: str, tmp: Path) -> None:
    ids = torch.randint(4, 97, (3, 12), generator=torch.Generator().manual_seed(0)).to(dev)

    for dtype in (torch.float32, torch.bfloat16):
        @check(f"every family ({len(FAMILY_NAMES)}): wrapped logits == bare logits, {dtype} on {dev}")
        def _(dtype=dtype):
            bad = []
            for family in FAMILY_NAMES:
                lm = lm_on(family, dev, dtype)
                with torch.no_grad():
                    bare = lm.model(input_ids=ids).logits
                    wrapped = lm(ids)
                    with lm.hooks(capture(Site(1, "resid_post")), capture(Site(0, "mlp_key"))):
                        hooked = lm(ids)
                if not (torch.equal(bare, wrapped) and torch.equal(bare, hooked)):
                    bad.append(family)
            assert not bad, f"differ: {bad}"
            return "bit-identical"

    @check(f"logit lens on {dev} == on cpu")
    def _():
        a = lmscope.logit_lens(lm_on("llama", dev), PROMPT)
        b = lmscope.logit_lens(lm_on("llama", "cpu"), PROMPT)
        diff = float((a.top_probs.cpu() - b.top_probs).abs().max())
        assert diff < 1e-4, diff
        return f"max |dp| {diff:.1e}"

    @check(f"causal trace on {dev} (noise 0) == on cpu")
    def _():
        cfg = TraceConfig(noise=0.0, samples=2, window=3)
        a = causal_trace(lm_on("llama", dev, sharp=True), PROMPT, SUBJECT, config=cfg)
        b = causal_trace(lm_on("llama", "cpu", sharp=True), PROMPT, SUBJECT, config=cfg)
        diff = max(float((a.scores[k].float().cpu() - b.scores[k].float()).abs().max()) for k in b.scores)
        assert diff < 1e-4, diff
        return f"max diff {diff:.1e} over {len(b.scores)} kinds"

    @check(f"ROME edit on {dev}: target rises, undo bit-identical")
    def _():
        lm = lm_on("llama", dev, sharp=True)
        cfg = RomeConfig(layer=1, contexts_per_length=2, stats_corpus=corpus_file(tmp), stats_samples=100,
                         v_lr=0.05, v_weight_decay=0.0, clamp_norm_factor=1000.0)
        before = {k: v.clone() for k, v in lm.model.state_dict().items()}
        text = "the capital of Eiffel Tower"
        tid = lm.tokenizer("Paris", add_special_tokens=False)["input_ids"][0]
        p = lambda: float(torch.softmax(lm(lm.tokenize(text)["input_ids"])[0, -1].float(), -1)[tid])  # noqa: E731
        with torch.no_grad():
            p0 = p()
        handle = rome_edit(lm, EditRequest("the capital of {}", "Eiffel Tower", "Paris"), cfg)
        with torch.no_grad():
            p1 = p()
        handle.undo()
        same = all(torch.equal(before[k], v) for k, v in lm.model.state_dict().items())
        assert p1 > p0 and same, (p0, p1, same)
        return f"p(Paris) {p0:.3f} -> {p1:.3f}"

    sae_checks(dev, tmp)


def sae_checks(dev: str, tmp: Path) -> None:  # noqa: C901 - one nested function per check
    corpus = corpus_file(tmp)
    harvest_cfg = HarvestConfig(corpus=corpus, split="all", seq_len=16, batch_size=4, tokens=4096, buffer_rows=512)
    train_cfg = TrainConfig(batch_tokens=64, warmup_steps=3, checkpoint_every=5, dead_tokens=256, resample_every=10)
    site = Site(1, "resid_post")

    @check(f"SAE harvest on {dev} == on cpu")
    def _():
        a = next(ActivationStream(lm_on("llama", dev), [site], harvest_cfg).buffers())[1][site]
        b = next(ActivationStream(lm_on("llama", "cpu"), [site], harvest_cfg).buffers())[1][site]
        diff = float((a - b).abs().max() / b.abs().max())
        assert a.shape == b.shape and diff < 1e-4, (a.shape, b.shape, diff)
        return f"{tuple(a.shape)}, max rel diff {diff:.1e}"

    jobs = [Job(site, SaeConfig(arch, ratio=4, k=4)) for arch in ("tied", "relu", "topk", "batchtopk")]
    results = {}

    @check(f"SAE training on {dev}: tied / relu / topk / batchtopk, FVE vs the cpu run")
    def _():
        for dev_ in (dev, "cpu"):
            results[dev_] = train_saes(lm_on("llama", dev_), jobs, harvest_cfg, train_cfg, tmp / f"train-{dev_}")
        parts = []
        for a, b in zip(results[dev], results["cpu"]):
            fa = lmscope.io.read_json(a / "cfg.json")["last"]["fve"]
            fb = lmscope.io.read_json(b / "cfg.json")["last"]["fve"]
            assert abs(fa - fb) < 0.05, (a.name, fa, fb)
            parts.append(f"{a.name.split('-')[1]} {fa:.3f}/{fb:.3f}")
        return "FVE gpu/cpu: " + ", ".join(parts)

    @check(f"SAE on {dev}: zero-error splice changes no logit; CE recovered runs")
    def _():
        lm = lm_on("llama", dev)
        sae = load_sae(results[dev][2]).to(dev)
        ids = torch.randint(4, 97, (2, 16), generator=torch.Generator().manual_seed(1)).to(dev)
        with torch.no_grad():
            clean = lm(ids)
            with lm.hooks(splice(sae, site, keep_error=True)):
                spliced = lm(ids)
        diff = float((clean - spliced).abs().max())
        assert diff < 1e-5, diff
        on_cpu = load_sae(results[dev][2])  # evaluate_sae moves the SAE to the model's device
        res = evaluate_sae(lm, on_cpu, site, EvalConfig(corpus=corpus, split="all", tokens=1024, seq_len=16))
        return f"splice max diff {diff:.1e}; topk CE recovered {res.ce_recovered:.3f}, FVE {res.fve:.3f}"

    @check(f"SAE on {dev}: killed and resumed == uninterrupted")
    def _():
        from lmscope.methods.sae import train as train_module
        real, calls = train_module._update, []

        def dies(*args, **kwargs):
            calls.append(1)
            if len(calls) == 4 * 7 + 2:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        train_module._update = dies
        try:
            train_saes(lm_on("llama", dev), jobs, harvest_cfg, train_cfg, tmp / "killed")
        except KeyboardInterrupt:
            pass
        finally:
            train_module._update = real
        resumed = train_saes(lm_on("llama", dev), jobs, harvest_cfg, train_cfg, tmp / "killed")
        again = train_saes(lm_on("llama", dev), jobs, harvest_cfg, train_cfg, tmp / "again")
        out = []
        for a, b, c in zip(results[dev], resumed, again):
            wa, wb, wc = (lmscope.io.load_tensors(p / "sae.safetensors") for p in (a, b, c))
            same = all(torch.equal(wa[k], wb[k]) for k in wa)
            repeat = all(torch.equal(wa[k], wc[k]) for k in wa)
            out.append(f"{a.name.split('-')[1]}: resumed {'==' if same else '!='}, rerun "
                       f"{'==' if repeat else '!='}")
            assert same or not repeat, "resume differs although a plain rerun is deterministic"
        return "; ".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu-check.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        import os
        os.environ["LMSCOPE_CACHE"] = str(Path(tmp) / "cache")
        run(args.device, Path(tmp))
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor()
    lines = [f"# lmscope on {name}", "", f"torch {torch.__version__}, transformers "
             f"{__import__('transformers').__version__}. `python bench/device/gpu_check.py`", "",
             "| check | result | detail |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in ROWS]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.exit(int(any(r[1] != "ok" for r in ROWS)))


if __name__ == "__main__":
    main()
