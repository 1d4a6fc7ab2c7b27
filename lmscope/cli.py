"""The ``lmscope`` command line. Each method's options are generated from its config dataclass."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from lmscope.config import add_config_args, config_from_args

log = logging.getLogger("lmscope")

DEFAULT_PROMPT = "The capital of France is"


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """Options valid before or after the subcommand (``suppress``: do not overwrite the main parser's value)."""
    default = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    from lmscope.model.loading import DEFAULT_MODEL

    parser.add_argument("--model", default=default(DEFAULT_MODEL),
                        help=f"bundled name, local folder, .gguf file or hub id (default: {DEFAULT_MODEL})")
    parser.add_argument("--device", default=default("cpu"), help="torch device (default: cpu)")
    parser.add_argument("--dtype", default=default("float32"), choices=["float32", "bfloat16", "float16"],
                        help="weight dtype (default: float32)")
    parser.add_argument("--seed", type=int, default=default(0), help="random seed (default: 0)")
    parser.add_argument("-q", "--quiet", action="store_true", default=default(False), help="only warnings")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (subcommands: models, info, lens)."""
    from lmscope.methods.lens import LensConfig

    parser = argparse.ArgumentParser(prog="lmscope", description=__doc__)
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the bundled models and what is cached")
    _global_options(p, suppress=True)

    p = sub.add_parser("info", help="family, layers, widths and site modules of a model")
    p.add_argument("name", nargs="?", help="model (default: --model)")
    _global_options(p, suppress=True)

    p = sub.add_parser("lens", help="logit lens of one prompt: lens.json, lens.png, report.html")
    p.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT, help=f"prompt (default: {DEFAULT_PROMPT!r})")
    p.add_argument("--out", type=Path, default=Path("out/lens"), help="output folder (default: out/lens)")
    add_config_args(p, LensConfig)
    _global_options(p, suppress=True)
    _trace_parsers(sub)
    _rome_parsers(sub)
    _stages_parsers(sub)
    return parser


def _trace_parsers(sub) -> None:
    from lmscope.methods.trace import TraceConfig

    p = sub.add_parser("trace", help="causal trace of one prompt: trace result, one PNG per kind, report.html")
    p.add_argument("prompt", help="the prompt, e.g. 'The Eiffel Tower is located in the city of'")
    p.add_argument("--subject", required=True, help="the subject, as it appears in the prompt")
    p.add_argument("--target", help="the answer to trace (its first token); default: the model's top-1 token")
    p.add_argument("--out", type=Path, default=Path("out/trace"), help="output folder (default: out/trace)")
    add_config_args(p, TraceConfig)
    _global_options(p, suppress=True)

    p = sub.add_parser("trace-dataset", help="average indirect effects over known facts (resumable)")
    p.add_argument("--data", type=Path, required=True, help="known_1000.json (ROME's known facts)")
    p.add_argument("--limit", type=int, help="trace only the first N facts")
    p.add_argument("--all-facts", action="store_true", help="also trace facts the model does not predict")
    p.add_argument("--out", type=Path, default=Path("out/trace-dataset"), help="output folder (resumes there)")
    add_config_args(p, TraceConfig)
    _global_options(p, suppress=True)


def _rome_parsers(sub) -> None:
    from lmscope.methods.rome import RomeConfig
    from lmscope.methods.rome.evaluate import EvalConfig

    p = sub.add_parser("edit", help="ROME edit of one fact: saves the edit, before/after generations and P(target)")
    p.add_argument("--prompt", required=True, help="template with {} for the subject, e.g. '{} is located in'")
    p.add_argument("--subject", required=True, help="the subject, e.g. 'The Eiffel Tower'")
    p.add_argument("--target", required=True, help="the new answer, e.g. ' Rome'")
    p.add_argument("--out", type=Path, default=Path("out/edit"), help="output folder (default: out/edit)")
    p.add_argument("--max-new-tokens", type=int, default=20, help="greedy tokens generated before / after")
    add_config_args(p, RomeConfig)
    _global_options(p, suppress=True)

    p = sub.add_parser("eval-edits", help="CounterFact metrics of ROME edits and of the unedited model (resumable)")
    p.add_argument("--data", type=Path, required=True, help="CounterFact JSON (flattened or ROME's nested layout)")
    p.add_argument("--limit", type=int, help="evaluate only the first N records")
    p.add_argument("--out", type=Path, default=Path("out/eval-edits"), help="output folder (resumes there)")
    add_config_args(p, RomeConfig)
    add_config_args(p, EvalConfig)
    _global_options(p, suppress=True)

    p = sub.add_parser("stats", help="second-moment statistics of the MLP keys at one layer (cached, resumable)")
    p.add_argument("--layer", type=int, required=True, help="the layer")
    p.add_argument("--samples", type=int, default=100_000, help="texts (paper: 100,000; capped at the corpus)")
    p.add_argument("--corpus", default="wiki", help="wiki, bbc, or a file / folder of texts (default: wiki)")
    _global_options(p, suppress=True)


def _stages_parsers(sub) -> None:
    from lmscope.methods.stages import StagesConfig

    p = sub.add_parser("stages", help="stages of inference: lesions, lens, locality, neurons, MLP norms + report")
    p.add_argument("--out", type=Path, default=Path("out/stages"), help="output folder (default: out/stages)")
    add_config_args(p, StagesConfig)
    _global_options(p, suppress=True)

    p = sub.add_parser("lesion", help="top next tokens of one prompt before / after deleting or swapping a block")
    p.add_argument("prompt", help="the prompt")
    p.add_argument("--layer", type=int, required=True, help="block to delete (or to swap with the next one)")
    p.add_argument("--mode", choices=["delete", "swap"], default="delete", help="delete or swap (default: delete)")
    p.add_argument("--top-k", type=int, default=5, help="tokens shown (default: 5)")
    _global_options(p, suppress=True)


def _load(args: argparse.Namespace, name: str | None = None):
    from lmscope.model.loading import load

    return load(name or args.model, device=args.device, dtype=args.dtype)


def cmd_models(args: argparse.Namespace) -> int:
    """Print the registry."""
    from lmscope.assets import cache_dir
    from lmscope.model.loading import list_models

    print(f"cache: {cache_dir()}")
    for row in list_models():
        state = f"cached at {row['path']}" if row["cached"] else "not cached yet (converted on first use)"
        print(f"{row['name']:<14} {row['description']}\n{'':<14} original: {row['hub_id']}; {state}")
    print("Also accepted: a local Hugging Face folder, a local .gguf file, or a hub id (when online).")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Print what lmscope knows about a model."""
    lm = _load(args, args.name)
    print(json.dumps(lm.describe(), indent=2))
    return 0


def _lens_summary(result) -> dict:
    """A readable JSON view: per layer, the top-k at the last position, KL and entropy; top-1 everywhere."""
    rows = []
    for i, label in enumerate(result.layer_labels):
        rows.append({
            "layer": label,
            "top_last": [[t, round(float(p), 5)] for t, p in zip(result.top_tokens[i][-1], result.top_probs[i, -1])],
            "kl_last": float(result.kl[i, -1]), "entropy_last": float(result.entropy[i, -1]),
            "top1": [pos[0] for pos in result.top_tokens[i]],
        })
    return {"model": result.model, "prompt": result.prompt, "tokens": result.tokens, "top_k": result.config.top_k,
            "layers": rows}


def cmd_lens(args: argparse.Namespace) -> int:
    """Run the logit lens and write lens.json, result/, lens.png, lens_curves.png and report.html."""
    from lmscope.methods.lens import LensConfig, logit_lens
    from lmscope.model.lm import check_prompt
    from lmscope.viz.lens import lens_report, plot_lens_curves, plot_lens_grid

    config = config_from_args(LensConfig, args)
    check_prompt(args.prompt)  # before the model loads: bad input fails fast
    lm = _load(args)
    result = logit_lens(lm, args.prompt, config)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    result.save(out / "result")
    (out / "lens.json").write_text(json.dumps(_lens_summary(result), indent=2, ensure_ascii=False))
    plot_lens_grid(result, out / "lens.png")
    plot_lens_curves(result, out / "lens_curves.png")
    lens_report(result).write(out / "report.html")
    print(f"{lm.name}: {args.prompt!r} -> {result.top_token()!r} (p={float(result.top_probs[-1, -1, 0]):.3f})")
    for i, label in enumerate(result.layer_labels):
        print(f"  layer {label:>5}: {result.top_tokens[i][-1][0]!r:<16} KL={float(result.kl[i, -1]):8.3f}")
    print(f"wrote {out}/lens.json, lens.png, lens_curves.png, report.html and result/")
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    """Trace one prompt and write result/, trace.json, trace_<kind>.png and report.html."""
    from lmscope.methods.trace import TraceConfig, causal_trace
    from lmscope.model.lm import check_prompt
    from lmscope.viz.trace import plot_trace, trace_report

    config = config_from_args(TraceConfig, args)
    check_prompt(args.prompt)
    lm = _load(args)
    result = causal_trace(lm, args.prompt, args.subject, args.target, config)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    result.save(out / "result")
    summary = {"model": result.model, "prompt": result.prompt, "subject": result.subject, "target": result.target,
               "tokens": result.tokens, "subject_range": list(result.subject_range), "clean_prob": result.clean_prob,
               "corrupted_prob": result.corrupted_prob, "noise": result.noise, "notes": result.notes,
               "scores": {k: v.tolist() for k, v in result.scores.items()}}
    (out / "trace.json").write_text(json.dumps(summary, ensure_ascii=False))
    for kind in result.scores:
        plot_trace(result, kind, out / f"trace_{kind}.png")
    trace_report(result).write(out / "report.html")
    print(f"{lm.name}: {args.subject!r} -> {result.target!r}: P = {result.clean_prob:.4f}, "
          f"P* = {result.corrupted_prob:.4f} (noise {result.noise:.4f})")
    for kind, scores in result.scores.items():
        pos, layer = divmod(int(scores.argmax()), scores.shape[1])
        print(f"  {kind:<18} max P*_restored {float(scores.max()):.4f} at token {pos} {result.tokens[pos]!r}, "
              f"layer {layer}")
    print(f"wrote {out}/trace.json, trace_*.png, report.html and result/")
    return 0


def cmd_trace_dataset(args: argparse.Namespace) -> int:
    """Trace known facts and write records.jsonl, result/, aie.png and report.html."""
    from lmscope.data.facts import load_known_facts
    from lmscope.methods.trace import TraceConfig
    from lmscope.methods.trace_dataset import trace_dataset
    from lmscope.viz.report import save_figure
    from lmscope.viz.trace import aie_figure, aie_report

    config = config_from_args(TraceConfig, args)
    facts = load_known_facts(args.data, args.limit)
    lm = _load(args)
    result = trace_dataset(lm, facts, args.out, config, only_predicted=not args.all_facts)
    save_figure(aie_figure(result), args.out / "aie.png")
    aie_report(result).write(args.out / "report.html")
    print(f"{lm.name}: traced {result.n_kept} of {result.n_facts} facts; ATE = {result.ate:.4f}")
    for kind in result.aie:
        layer, value = result.peak(kind)
        print(f"  {kind:<18} AIE peak at the last subject token: layer {layer} ({value:.4f})")
    print(f"wrote {args.out}/records.jsonl, result/, aie.png and report.html")
    return 0


@torch.no_grad()
def _greedy(lm, text: str, n: int) -> str:
    ids = lm.tokenize(text)["input_ids"]
    out = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                            pad_token_id=lm.tokenizer.pad_token_id or lm.tokenizer.eos_token_id)
    return lm.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def _fact_probs(lm, request) -> dict:
    from lmscope.methods.rome.evaluate import target_probs

    return {"p_target": target_probs(lm, [request.text], request.target)[0]}


def cmd_edit(args: argparse.Namespace) -> int:
    """Edit one fact with ROME; write the edit (cfg.json + safetensors) and edit.json with before / after."""
    from lmscope.methods.rome import EditRequest, RomeConfig, rome_edit

    config = config_from_args(RomeConfig, args)
    request = EditRequest(args.prompt, args.subject, args.target)
    lm = _load(args)
    before = {"generation": _greedy(lm, request.text, args.max_new_tokens), **_fact_probs(lm, request)}
    handle = rome_edit(lm, request, config)
    after = {"generation": _greedy(lm, request.text, args.max_new_tokens), **_fact_probs(lm, request)}
    out: Path = args.out
    handle.edit.save(out / "edit")
    summary = {"model": lm.name, "layer": handle.edit.layer, "prompt": request.text, "target": request.target,
               "before": before, "after": after, "v_steps": len(handle.edit.losses),
               "final_loss": handle.edit.losses[-1]}
    (out / "edit.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    print(f"{lm.name}: edited layer {handle.edit.layer}: {request.text!r} -> {request.target!r}")
    print(f"  before: P(target) = {before['p_target']:.4f}   {request.text}{before['generation']!r}")
    print(f"  after:  P(target) = {after['p_target']:.4f}   {request.text}{after['generation']!r}")
    print(f"wrote {out}/edit/ (apply it with lmscope.methods.rome.apply_edit) and {out}/edit.json")
    return 0


def cmd_eval_edits(args: argparse.Namespace) -> int:
    """Evaluate ROME on CounterFact records: metrics.json, result/, report.html."""
    from lmscope.data.facts import load_counterfact
    from lmscope.methods.rome import RomeConfig
    from lmscope.methods.rome.evaluate import EvalConfig, evaluate_counterfact
    from lmscope.viz.rome import counterfact_report

    config, eval_config = config_from_args(RomeConfig, args), config_from_args(EvalConfig, args)
    records = load_counterfact(args.data, args.limit)
    lm = _load(args)
    result = evaluate_counterfact(lm, records, args.out, config, eval_config)
    counterfact_report(result).write(args.out / "report.html")
    names = list(result.edited)
    print(f"{lm.name}: {result.n_records} CounterFact records, edit layer {result.layer}")
    print("  " + " ".join(f"{n:>7}" for n in ["", *names]))
    for label, metrics in (("ROME", result.edited), ("none", result.unedited)):
        print("  " + f"{label:>7}" + " ".join(f"{metrics.get(n, float('nan')):7.1f}" for n in names))
    for note in result.notes:
        print(f"  note: {note}")
    print(f"wrote {args.out}/metrics.json, records.jsonl, result/ and report.html")
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    """Run the stages analysis; write result/, stages.json, the figures and report.html."""
    from lmscope.methods.stages import StagesConfig, stages
    from lmscope.viz.report import save_figure
    from lmscope.viz.stages import curves_figure, lesion_figure, stages_report, summary_figure

    config = config_from_args(StagesConfig, args)
    lm = _load(args)
    result = stages(lm, config)
    out: Path = args.out
    result.save(out / "result")
    summary = {"model": lm.name, "tokens": result.tokens, "base_accuracy": result.base_accuracy,
               **{k: v.tolist() for k, v in result.lesion.items()}, "lens_kl": result.lens_kl.tolist(),
               "prediction_neurons": result.counts("prediction").tolist(),
               "suppression_neurons": result.counts("suppression").tolist(), "top_neurons": result.top_neurons}
    (out / "stages.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    for name, make in (("summary", summary_figure), ("lesions", lesion_figure), ("curves", curves_figure)):
        save_figure(make(result), out / f"{name}.png")
    stages_report(result).write(out / "report.html")
    print(f"{lm.name}: {result.tokens} tokens, base top-1 accuracy {result.base_accuracy:.3f}")
    for mode in ("delete", "swap"):
        values = " ".join(f"{v:.2f}" for v in result.lesion[f"{mode}_rel_acc"].tolist())
        print(f"  {mode:<6} relative accuracy per layer: {values}")
    print(f"wrote {out}/stages.json, summary.png, lesions.png, curves.png, report.html and result/")
    return 0


def cmd_lesion(args: argparse.Namespace) -> int:
    """Top next tokens of one prompt, unmodified and with block --layer deleted (or swapped with the next)."""
    from lmscope.model.lm import check_prompt
    from lmscope.model.surgery import delete_blocks, swap_blocks

    check_prompt(args.prompt)
    lm = _load(args)
    ids = lm.tokenize(args.prompt)["input_ids"]
    lesion = delete_blocks if args.mode == "delete" else swap_blocks
    with torch.no_grad():
        before = torch.softmax(lm(ids)[0, -1].float(), -1)
        with lesion(lm, args.layer):
            after = torch.softmax(lm(ids)[0, -1].float(), -1)
    what = f"block {args.layer} deleted" if args.mode == "delete" else f"blocks {args.layer}, {args.layer + 1} swapped"
    for label, probs in (("unmodified", before), (what, after)):
        top = probs.topk(args.top_k)
        tokens = ", ".join(f"{t!r} {p:.3f}" for t, p in zip(lm.to_str_tokens(top.indices), top.values.tolist()))
        print(f"{label:>24}: {tokens}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """Compute (or find in the cache) the second moment of the MLP keys at one layer."""
    from lmscope.methods.rome.stats import second_moment, stats_path

    lm = _load(args)
    stats = second_moment(lm, args.layer, args.corpus, args.samples)
    print(f"{lm.name}: layer {stats.layer}: E[k k^T] over {stats.texts} texts, {stats.tokens} tokens of "
          f"{stats.corpus} -> {stats_path(lm, stats.layer, args.corpus, args.samples, stats.max_len)}")
    return 0


COMMANDS = {"models": cmd_models, "info": cmd_info, "lens": cmd_lens, "trace": cmd_trace,
            "trace-dataset": cmd_trace_dataset, "edit": cmd_edit, "stats": cmd_stats, "eval-edits": cmd_eval_edits,
            "stages": cmd_stages, "lesion": cmd_lesion}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lmscope`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="lmscope: %(message)s")
    torch.manual_seed(args.seed)
    from lmscope.assets import AssetError
    from lmscope.data.facts import DataError
    from lmscope.io import ArtifactError
    from lmscope.model import FamilySpecError, InputError, ModelNotFoundError, SiteError

    try:
        return COMMANDS[args.command](args)
    except (AssetError, ArtifactError, DataError, FamilySpecError, InputError, ModelNotFoundError, SiteError,
            ValueError) as err:
        print(f"lmscope {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
