"""SAELens peer benchmark: a standard (ReLU + L1) SAE on SmolLM2-135M's layer-15 residual stream, on lmscope's
Wikipedia corpus, timed in three phases, offline. Run it with the peer virtualenv (bench/peers/setup_saelens.sh):

    bench/peers/.venv-saelens/bin/python bench/peers/saelens_bench.py [--tokens 200000] [--threads 2]

1. harvest: SAELens's CacheActivationsRunner runs the model and writes the activations to an on-disk cache;
2. train from cache: LanguageModelSAETrainingRunner with use_cached_activations (no model forward passes);
3. end to end: LanguageModelSAETrainingRunner streaming activations from the model (a fresh SAE).

The model is loaded once, with transformers from lmscope's cache folder, and handed to TransformerLens
(``hf_model=``, ``tokenizer=``); it is loaded outside every timed phase. Prints one JSON line on stdout (everything
else goes to stderr): tokens/s of each phase, the final MSE / L0 / explained variance of each training run as
SAELens computes them, a matmul probe of the machine's speed before and after, the settings and the versions.
See bench/peers/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata as md
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_var] = "1"  # the hub is unreachable: fail at once rather than retry
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402  (after the environment above)

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = Path("~/.cache/lmscope/models/smollm2-135m").expanduser()
LMSCOPE_PYTHON = REPO / ".venv" / "bin" / "python"
LAYER = 15
HOOK = f"blocks.{LAYER}.hook_resid_post"
D_IN, RATIO, CONTEXT, BATCH_TOKENS = 576, 8, 128, 4096
PROMPTS_PER_FORWARD = BATCH_TOKENS // CONTEXT  # 32 rows of 128 tokens per model forward pass
BUFFER_TOKENS = 65_536  # SAELens's shuffling buffer, sized like lmscope's harvest buffer_rows
PHASES = ("harvest", "train_from_cache", "end_to_end")
NORM_BATCHES = 2  # batches SAELens reads to estimate the input-norm scale (its default, 1000, is 4M tokens)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=200_000, help="tokens each training run trains on")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--lr", type=float, default=4e-4, help="Adam learning rate (constant)")
    p.add_argument("--l1", type=float, default=5.0, help="L1 coefficient (inputs scaled to E|x| = sqrt(d_in))")
    p.add_argument("--split", default="train", choices=("train", "test", "all"), help="lmscope wiki split")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/saelens-bench"),
                   help="scratch: the corpus as JSONL (kept) and the activation cache (deleted after the run)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--epochs", type=int, default=1,
                   help="passes over the cache when training from it (the harvest covers --tokens once)")
    p.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES,
                   help="phases to run (train_from_cache needs harvest)")
    p.add_argument("--model-dtype", default="float32", choices=("float32", "bfloat16"),
                   help="dtype of the language model's weights (the SAE trains in float32)")
    p.add_argument("--autocast", action="store_true",
                   help="SAELens' autocast: the SAE's forward under torch.autocast(bfloat16), weights float32")
    p.add_argument("--save", type=Path, help="save each trained SAE (SAELens inference layout) to SAVE/<phase>")
    args = p.parse_args(argv)
    if "train_from_cache" in args.phases and "harvest" not in args.phases:
        p.error("train_from_cache needs the harvest phase")
    if args.tokens < BATCH_TOKENS:
        p.error(f"--tokens must be at least one batch ({BATCH_TOKENS})")
    return args


def dump_corpus(workdir: Path, split: str) -> Path:
    """Write lmscope's packaged Wikipedia texts as ``{"text": ...}`` JSONL (once) with lmscope's own venv.

    Returns the folder holding ``train.jsonl``, which ``datasets.load_dataset(folder, split="train")`` reads
    offline: this is the ``dataset_path`` SAELens is given.
    """
    folder = workdir / f"wiki-{split}"
    target = folder / "train.jsonl"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        code = ("import json, sys, lmscope.data as d\n"
                "with open(sys.argv[1], 'w', encoding='utf-8') as f:\n"
                "    for t in d.iter_texts('wiki', split=sys.argv[2]):\n"
                "        f.write(json.dumps({'text': t}) + '\\n')\n")
        subprocess.run([str(LMSCOPE_PYTHON), "-c", code, f"{target}.tmp", split], check=True)
        os.replace(f"{target}.tmp", target)
    return folder


def load_model(dtype: torch.dtype = torch.float32):
    """SmolLM2-135M as a TransformerLens HookedTransformer, built from the local HF folder without the hub.

    TransformerLens 3.9 has no SmolLM2 among its official names, but its config loader reads a local folder's
    config.json (LlamaForCausalLM here); the folder path only has to pass the official-name check, so it is
    registered as one. The weights come from the transformers model passed as ``hf_model``; no processing
    (no LayerNorm folding or centring), which is how SAELens loads models itself.
    """
    from transformer_lens import HookedTransformer
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = str(MODEL_DIR)
    if name not in loading.OFFICIAL_MODEL_NAMES:
        loading.OFFICIAL_MODEL_NAMES.append(name)
    hf_model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(name)
    model = HookedTransformer.from_pretrained_no_processing(
        name, hf_model=hf_model, tokenizer=tokenizer, device="cpu", dtype=dtype)
    del hf_model
    return model.eval()


def harvest_tokens(tokens: int) -> int:
    """Tokens to cache so that training on ``tokens`` never wraps around the cache.

    Training reads more than it trains on: the norm estimate takes NORM_BATCHES batches, SAELens's shuffle buffer
    is refilled to BUFFER_TOKENS before it serves (so up to all of it is unserved when training stops), and special
    tokens (BOS, about 2% of the positions here) are dropped; one load and 5% margin on top.
    """
    need = (tokens + (NORM_BATCHES + 1) * BATCH_TOKENS + BUFFER_TOKENS) * 1.05
    return math.ceil(need / BATCH_TOKENS) * BATCH_TOKENS


def harvest(model, corpus: Path, cache: Path, tokens: int, seed: int) -> dict:
    """Phase 1: SAELens's CacheActivationsRunner writes at least ``tokens`` activations of HOOK to ``cache``.

    SAELens harvests whole buffers; they are sized to split ``tokens`` evenly into shards under 1 GB (the HF
    datasets writer has trouble past 2 GB), so at most a few batches more than ``tokens`` are cached.
    """
    from sae_lens import cache_activations_runner as car
    from sae_lens.config import CacheActivationsRunnerConfig

    n_buffers = math.ceil(tokens * D_IN * 4 / 1e9)
    per_buffer = math.ceil(tokens / n_buffers / BATCH_TOKENS) * BATCH_TOKENS
    cfg = CacheActivationsRunnerConfig(
        dataset_path=str(corpus), model_name=str(MODEL_DIR), model_batch_size=PROMPTS_PER_FORWARD,
        hook_name=HOOK, d_in=D_IN, training_tokens=n_buffers * per_buffer, context_size=CONTEXT,
        new_cached_activations_path=str(cache), shuffle=False, seed=seed, dtype="float32", device="cpu",
        buffer_size_gb=(per_buffer + 0.5) * D_IN * 4 / 1e9)
    load_model_ = car.load_model
    car.load_model = lambda **_: model  # the runner would load the model itself; give it ours
    try:
        t0 = time.perf_counter()
        dataset = car.CacheActivationsRunner(cfg).run()
        seconds = time.perf_counter() - t0
    finally:
        car.load_model = load_model_
    cached = len(dataset) * CONTEXT
    return {"tokens": cached, "seconds": round(seconds, 2), "tokens_per_s": round(cached / seconds, 1)}


def runner_config(args: argparse.Namespace, corpus: Path, cache: Path | None):
    """The SAELens training configuration; from the on-disk cache (``args.epochs`` passes) when ``cache`` is given."""
    from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig, StandardTrainingSAEConfig

    steps = args.tokens // BATCH_TOKENS * (args.epochs if cache is not None else 1)
    sae = StandardTrainingSAEConfig(
        d_in=D_IN, d_sae=D_IN * RATIO, l1_coefficient=args.l1, l1_warm_up_steps=max(1, steps // 20),
        normalize_activations="expected_average_only_in", dtype="float32", device="cpu")
    return LanguageModelSAERunnerConfig(
        sae=sae, model_name=str(MODEL_DIR), hook_name=HOOK, dataset_path=str(corpus), streaming=True,
        is_dataset_tokenized=False, dataset_trust_remote_code=False, context_size=CONTEXT, prepend_bos=True,
        exclude_special_tokens=True,
        use_cached_activations=cache is not None, cached_activations_path=str(cache) if cache else None,
        training_tokens=steps * BATCH_TOKENS, train_batch_size_tokens=BATCH_TOKENS,
        store_batch_size_prompts=PROMPTS_PER_FORWARD, n_batches_in_buffer=BUFFER_TOKENS // CONTEXT,
        n_batches_for_norm_estimate=NORM_BATCHES, lr=args.lr, lr_scheduler_name="constant",
        adam_beta1=0.9, adam_beta2=0.999, device="cpu", dtype="float32", seed=args.seed, autocast=args.autocast,
        logger=LoggingConfig(log_to_wandb=False), checkpoint_path=None, output_path=None, verbose=False)


def train(model, cfg, save: Path | None = None) -> dict:
    """Phases 2 and 3: one SAELens training run, timed from building the runner to the trained SAE.

    The metrics are SAELens's own (``SAETrainer.build_train_step_log_dict``) on the last training batch, in the
    scaled units the SAE trains in: ``mse`` is the squared error summed over d_in, mean over tokens. ``save``: write
    the trained SAE there (the input scaling folded in, as SAELens does at the end of training).
    """
    from sae_lens import LanguageModelSAETrainingRunner
    from sae_lens.training.sae_trainer import SAETrainer

    last: dict = {}
    step = SAETrainer.step

    def recording_step(trainer, batch):
        last["trainer"], last["output"] = trainer, step(trainer, batch)
        return last["output"]

    torch.manual_seed(cfg.seed)
    SAETrainer.step = recording_step
    try:
        t0 = time.perf_counter()
        sae = LanguageModelSAETrainingRunner(cfg, override_model=model).run()
        seconds = time.perf_counter() - t0
    finally:
        SAETrainer.step = step
    if save is not None:
        sae.save_inference_model(save)
    trainer = last["trainer"]
    log = trainer.build_train_step_log_dict(last["output"], trainer.n_training_samples)
    tokens = trainer.n_training_samples
    return {"tokens": tokens, "steps": trainer.n_training_steps, "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1), "mse": log["losses/mse_loss"],
            "mse_per_dim": log["losses/mse_loss"] / D_IN, "l1_loss": log["losses/l1_loss"],
            "l0": log["metrics/l0"], "explained_variance": log["metrics/explained_variance"],
            "dead_features": log["sparsity/dead_features"]}


def probe_gflops(repeats: int = 20) -> float:
    """Speed of this machine right now: GFLOP/s of the SAE encoder's matmul (4096 x 576 @ 576 x 4608), float32.

    Measured before and after the run: shared machines drift (up to 2x here within an hour), so a comparison
    with another benchmark should be made on runs whose probes agree.
    """
    x, w = torch.randn(BATCH_TOKENS, D_IN), torch.randn(D_IN, D_IN * RATIO)
    x @ w
    t0 = time.perf_counter()
    for _ in range(repeats):
        x @ w
    return round(2 * BATCH_TOKENS * D_IN * D_IN * RATIO * repeats / (time.perf_counter() - t0) / 1e9, 1)


def versions() -> dict:
    """Versions of the interpreter and of the packages that matter."""
    names = ("sae-lens", "transformer-lens", "torch", "transformers", "datasets", "numpy")
    return {"python": platform.python_version(), **{n: md.version(n) for n in names}}


def settings(args: argparse.Namespace) -> dict:
    """Everything that defines the run, for the JSON line."""
    return {"model": "SmolLM2-135M-Instruct (lmscope bundled)", "hook": HOOK, "d_in": D_IN, "d_sae": D_IN * RATIO,
            "architecture": "standard (ReLU, L1 weighted by decoder norms)", "context": CONTEXT,
            "batch_tokens": BATCH_TOKENS, "prompts_per_forward": PROMPTS_PER_FORWARD, "optimizer": "Adam(0.9, 0.999)",
            "lr": args.lr, "lr_schedule": "constant", "l1_coefficient": args.l1,
            "l1_warm_up_steps": max(1, args.tokens // BATCH_TOKENS // 20), "grad_clip": 1.0,
            "normalize_activations": "expected_average_only_in", "norm_estimate_batches": NORM_BATCHES,
            "buffer_tokens": BUFFER_TOKENS, "mix_fraction": 0.5, "exclude_special_tokens": True,
            "prepend_bos": True, "corpus": f"lmscope wiki ({args.split})", "dtype": "float32",
            "model_dtype": args.model_dtype, "autocast": args.autocast, "device": "cpu",
            "threads": args.threads, "seed": args.seed}


def run(args: argparse.Namespace) -> dict:
    """Load the model, then harvest, train from the cache, and train end to end."""
    torch.set_num_threads(args.threads)
    corpus = dump_corpus(args.workdir, args.split)
    gflops_before = probe_gflops()
    t0 = time.perf_counter()
    model = load_model(getattr(torch, args.model_dtype))
    load_s = time.perf_counter() - t0
    cache = args.workdir / f"acts-{os.getpid()}"
    saved = {p: args.save / p if args.save else None for p in PHASES}
    phases = {}
    try:
        if "harvest" in args.phases:
            phases["harvest"] = harvest(model, corpus, cache, harvest_tokens(args.tokens), args.seed)
        if "train_from_cache" in args.phases:
            phases["train_from_cache"] = train(model, runner_config(args, corpus, cache), saved["train_from_cache"])
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if "end_to_end" in args.phases:
        phases["end_to_end"] = train(model, runner_config(args, corpus, None), saved["end_to_end"])
    return {"bench": "saelens", **phases, "epochs": args.epochs,
            "model_load_s": round(load_s, 2), "matmul_gflops": {"before": gflops_before, "after": probe_gflops()},
            "settings": settings(args), "versions": versions(), "cpu": platform.processor() or platform.machine()}


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark with every library's printing sent to stderr; the JSON line alone goes to stdout."""
    args = parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):
        result = run(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
