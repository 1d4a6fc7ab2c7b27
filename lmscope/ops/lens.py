"""The lens of one prompt (logit or tuned readout), as an operation (``lmscope lens``, the workbench's lens)."""

from __future__ import annotations

from lmscope.methods.lens import LensConfig, logit_lens
from lmscope.model.lm import check_prompt
from lmscope.ops.base import PAGE_PROMPT_TOKENS, Operation, Param
from lmscope.viz.outputs import write_lens

DEFAULT_PROMPT = "The capital of France is"


def _report(r) -> list[str]:
    lines = [f"{r.model}: {r.prompt!r} -> {r.top_token()!r} (p={float(r.top_probs[-1, -1, 0]):.3f}), read through the "
             f"{r.readout_label}"]
    lines += [f"  layer {label:>5}: {r.top_tokens[i][-1][0]!r:<16} KL={float(r.kl[i, -1]):8.3f}"
              for i, label in enumerate(r.layer_labels)]
    return lines


LENS = Operation(
    "lens", "lens: the top token of every layer at every position (logit lens, or the tuned lens in the store)",
    (Param("prompt", "the prompt", required=True, default=DEFAULT_PROMPT, positional=True,
           page_max_tokens=PAGE_PROMPT_TOKENS),),
    LensConfig,
    run=lambda lm, p, cfg: logit_lens(lm, p["prompt"], cfg),
    write=write_lens,
    checks=(lambda p: check_prompt(p["prompt"]),),
    report=_report)
