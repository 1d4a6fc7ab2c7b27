"""The causal trace of one prompt, as an operation (``lmscope trace run``, the workbench's trace)."""

from __future__ import annotations

from lmscope.errors import InputError
from lmscope.methods.trace import TraceConfig, causal_trace
from lmscope.model.lm import check_prompt
from lmscope.ops.base import PAGE_PROMPT_TOKENS, Operation, Param
from lmscope.viz.outputs import write_trace


def subject_in_prompt(p: dict) -> None:
    """The subject appears in the prompt (an edit's template is read with the subject in place)."""
    if p["subject"] not in p["prompt"].replace("{}", p["subject"]):
        raise InputError(f"the subject {p['subject']!r} is not in the prompt {p['prompt']!r}")


def _report(r) -> list[str]:
    lines = [f"{r.model}: {r.subject!r} -> {r.target!r}: P = {r.clean_prob:.4f}, P* = {r.corrupted_prob:.4f} "
             f"(noise {r.noise:.4f})"]
    lines += [f"  {kind:<18} max P*_restored {peak['p']:.4f} at token {peak['position']} {peak['token']!r}, "
              f"layer {peak['layer']}" for kind, peak in r.peaks().items()]
    return lines


TRACE = Operation(
    "trace", "causal trace: restore hidden / MLP / attention states of a noised subject",
    (Param("prompt", "the prompt, e.g. 'The Eiffel Tower is located in the city of'", required=True,
           positional=True, page_max_tokens=PAGE_PROMPT_TOKENS),
     Param("subject", "the subject, as it appears in the prompt", required=True),
     Param("target", "the answer traced (its first token); default: the model's top-1 token")),
    TraceConfig,
    run=lambda lm, p, cfg: causal_trace(lm, p["prompt"], p["subject"], p.get("target") or None, cfg),
    write=write_trace,
    checks=(lambda p: check_prompt(p["prompt"]), subject_in_prompt),
    report=_report)
