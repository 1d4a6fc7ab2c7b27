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
    return parser


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


COMMANDS = {"models": cmd_models, "info": cmd_info, "lens": cmd_lens}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lmscope`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="lmscope: %(message)s")
    torch.manual_seed(args.seed)
    from lmscope.assets import AssetError
    from lmscope.io import ArtifactError
    from lmscope.model import FamilySpecError, InputError, ModelNotFoundError, SiteError

    try:
        return COMMANDS[args.command](args)
    except (AssetError, ArtifactError, FamilySpecError, InputError, ModelNotFoundError, SiteError, ValueError) as err:
        print(f"lmscope {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
