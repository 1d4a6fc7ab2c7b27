"""The stages commands: ``stages`` (the whole analysis) and ``lesion`` (one block on one prompt)."""

from __future__ import annotations

from lmscope.cli.operations import operation_command
from lmscope.cli.registry import command, config, load_model, out_dir, save_result
from lmscope.methods.stages import StagesConfig, stages
from lmscope.ops import LESION
from lmscope.viz.report import save_figure
from lmscope.viz.stages import curves_figure, lesion_figure, stages_report, summary_figure


@command("stages", configs=(StagesConfig,), out="out/stages")
def run_stages(args) -> int:
    """Run the stages analysis; write result/, stages.json, the figures and report.html."""
    cfg = config(args, StagesConfig)
    lm = load_model(args)
    result = stages(lm, cfg)
    out = out_dir(args)
    save_result(out, result, "stages.json")
    for name, make in (("summary", summary_figure), ("lesions", lesion_figure), ("curves", curves_figure)):
        save_figure(make(result), out / f"{name}.png")
    stages_report(result).write(out / "report.html")
    print(f"{lm.name}: {result.tokens} tokens, base top-1 accuracy {result.base_accuracy:.3f}")
    for mode in ("delete", "swap"):
        if result.base_accuracy <= 0:
            print(f"  {mode:<6} relative accuracy per layer: n/a (the model predicts no next token of this text)")
            continue
        values = " ".join(f"{v:.2f}" for v in result.lesion[f"{mode}_rel_acc"].tolist())
        print(f"  {mode:<6} relative accuracy per layer: {values}")
    print(f"wrote {out}/stages.json, summary.png, lesions.png, curves.png, report.html and result/")
    return 0


lesion = operation_command("lesion", LESION, out="out/lesion", wrote="lesion.json, report.html and result/")
