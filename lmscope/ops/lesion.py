"""One lesion of one prompt, as an operation (``lmscope stages lesion``, the workbench's lesion)."""

from __future__ import annotations

from lmscope.methods.stages import LesionConfig, lesion_prompt
from lmscope.model.lm import check_prompt
from lmscope.ops.base import PAGE_PROMPT_TOKENS, Operation, Param
from lmscope.viz.outputs import write_lesion


def _report(r) -> list[str]:
    return [f"{label:>24}: " + ", ".join(f"{t!r} {p:.3f}" for t, p in top)
            for label, top in (("unmodified", r.before), (r.label, r.after))]


LESION = Operation(
    "lesion", "delete (or swap) one block and compare the next tokens",
    (Param("prompt", "the prompt", required=True, positional=True, page_max_tokens=PAGE_PROMPT_TOKENS),),
    LesionConfig,
    run=lambda lm, p, cfg: lesion_prompt(lm, p["prompt"], cfg),
    write=write_lesion,
    checks=(lambda p: check_prompt(p["prompt"]),),
    report=_report)
