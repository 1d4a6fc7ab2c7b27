"""The ``lens`` command: the logit lens of one prompt."""

from __future__ import annotations

from lmscope.cli.registry import arg, command, config, load_model, out_dir
from lmscope.methods.lens import LensConfig, logit_lens
from lmscope.model.lm import check_prompt
from lmscope.viz.outputs import write_lens

DEFAULT_PROMPT = "The capital of France is"


@command("lens",
         arg("prompt", nargs="?", default=DEFAULT_PROMPT, help=f"prompt (default: {DEFAULT_PROMPT!r})"),
         configs=(LensConfig,), out="out/lens")
def lens(args) -> int:
    """Run the logit lens and write lens.json, result/, lens.png, lens_curves.png and report.html."""
    cfg = config(args, LensConfig)
    check_prompt(args.prompt)  # before the model loads: bad input fails fast
    lm = load_model(args)
    result = logit_lens(lm, args.prompt, cfg)
    out = out_dir(args)
    write_lens(result, out)
    print(f"{lm.name}: {args.prompt!r} -> {result.top_token()!r} (p={float(result.top_probs[-1, -1, 0]):.3f})")
    for i, label in enumerate(result.layer_labels):
        print(f"  layer {label:>5}: {result.top_tokens[i][-1][0]!r:<16} KL={float(result.kl[i, -1]):8.3f}")
    print(f"wrote {out}/lens.json, lens.png, lens_curves.png, report.html and result/")
    return 0
