"""The ``lens`` commands: one prompt through a readout, and a tuned lens' training, comparison and import.

``lens run`` is the operation :data:`lmscope.ops.LENS` (the workbench's lens task).
"""

from __future__ import annotations

from pathlib import Path

from lmscope.cli.operations import operation_command
from lmscope.cli.registry import arg, command, config, load_model, out_dir, save_result
from lmscope.errors import InputError
from lmscope.io import CFG_NAME
from lmscope.methods.lens import (
    LOGIT,
    CompareConfig,
    TuneConfig,
    TunedLens,
    compare_lenses,
    lens_path,
    read_tuned_lens_folder,
    resolve_readout,
    train_tuned_lens,
)
from lmscope.ops import LENS
from lmscope.ops.lens import DEFAULT_PROMPT
from lmscope.viz.lens import comparison_figure, comparison_report, training_figure, training_report
from lmscope.viz.report import save_figure

__all__ = ["DEFAULT_PROMPT", "lens", "lens_eval", "lens_import", "lens_train"]

lens = operation_command("lens", LENS, out="out/lens", wrote="lens.json, lens.png, lens_curves.png, report.html and "
                                                              "result/")


def install(lens_: TunedLens, lm) -> Path:
    """Put ``lens_`` into the store as ``lm``'s tuned lens (replacing any earlier one at once); returns the folder."""
    folder = lens_path(lm)
    folder.parent.mkdir(parents=True, exist_ok=True)
    lens_.save_atomic(folder)
    return folder


@command("lens-train", configs=(TuneConfig,), out="out/lens-train")
def lens_train(args) -> int:
    """Train a tuned lens (resumable from --out); save it to --out/result/ and into the store; draw its losses."""
    cfg = config(args, TuneConfig)
    lm = load_model(args)
    out = out_dir(args)
    trained = train_tuned_lens(lm, cfg, out)
    save_result(out, trained, "tuned_lens.json")
    save_figure(training_figure(trained), out / "training.png")
    training_report(trained).write(out / "report.html")
    folder = install(trained, lm)
    t = trained.training
    print(f"{lm.name}: tuned lens trained on {t['tokens']:,} tokens in {t['steps']} steps, {t['seconds']:.0f} s; "
          f"mean KL of the last step {sum(t['history'][-1]) / len(t['history'][-1]):.3f} nats")
    shrink = t.get("shrink") or {}
    if shrink:
        changed = [f"{n} (a = {a:g})" for n, a in zip(shrink["layers"], shrink["alpha"]) if a < 1]
        print(f"checked on {shrink['positions']:,} held-out positions of the {cfg.split} split: "
              + (f"translator(s) shrunk towards the identity at layer(s) {', '.join(changed)}" if changed else
                 "every translator kept as trained"))
    print(f"in the store: {folder} (lens --readout auto and stages now read through it)")
    print(f"wrote {out}/tuned_lens.json, training.png, report.html and result/")
    return 0


@command("lens-eval",
         arg("--lens", dest="lens_folder", default=None,
             help="a tuned lens folder (lmscope's, or tuned-lens' config.json + params.pt) instead of the store's"),
         configs=(CompareConfig,), out="out/lens-eval")
def lens_eval(args) -> int:
    """Compare the logit lens with the tuned lens on held-out text: KL to the final layer and top-1 agreement."""
    cfg = config(args, CompareConfig)
    lm = load_model(args)
    tuned = read_lens_folder(args.lens_folder, lm) if args.lens_folder else resolve_readout(lm, "tuned")
    result = compare_lenses(lm, [LOGIT, tuned], cfg)
    out = out_dir(args)
    save_result(out, result, "lens_eval.json")
    save_figure(comparison_figure(result), out / "lens_eval.png")
    comparison_report(result).write(out / "report.html")
    mean = result.summary()["mean_kl"]
    print(f"{lm.name}, {result.positions:,} held-out positions: mean KL over the layers " +
          ", ".join(f"{k} {v:.3f}" for k, v in mean.items()) + " nats")
    for i, label in enumerate(result.layer_labels):
        print(f"  layer {label:>5}: KL {float(result.kl[0, i]):7.3f} -> {float(result.kl[1, i]):7.3f}   "
              f"top-1 {float(result.top1[0, i]):.3f} -> {float(result.top1[1, i]):.3f}")
    worse = result.worse_rows()
    print("the tuned lens has the lower KL at every layer but the last" if not worse else
          f"the tuned lens does not beat the logit lens at layer(s) {', '.join(worse)}")
    print(f"wrote {out}/lens_eval.json, lens_eval.png, report.html and result/")
    return 0


def read_lens_folder(folder: str | Path, lm) -> TunedLens:
    """A tuned lens folder of either layout, checked against ``lm``."""
    folder = Path(folder)
    if (folder / CFG_NAME).is_file():
        lens_ = TunedLens.load(folder)
    elif (folder / "params.pt").is_file():
        lens_ = read_tuned_lens_folder(folder, lm)
    else:
        raise InputError(f"{folder} holds no tuned lens (lmscope's cfg.json, or tuned-lens' config.json + params.pt)")
    lens_.check_model(lm)
    return lens_


@command("lens-import", arg("folder", help="a tuned lens folder: tuned-lens' (config.json + params.pt) or lmscope's"))
def lens_import(args) -> int:
    """Check a tuned lens folder against the model and put it into the store as the model's tuned lens."""
    if not Path(args.folder).is_dir():
        raise InputError(f"{args.folder} is not a folder")
    lm = load_model(args)
    folder = install(read_lens_folder(args.folder, lm), lm)
    print(f"{args.folder} -> {folder}: {lm.name}'s tuned lens (lens --readout auto and stages read through it)")
    return 0

