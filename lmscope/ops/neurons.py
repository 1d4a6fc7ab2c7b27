"""The MLP neurons that write a token, as an operation (``lmscope neurons find``, the workbench's neurons)."""

from __future__ import annotations

from lmscope.methods.neurons import NeuronConfig, find_neurons
from lmscope.model.lm import check_prompt
from lmscope.ops.base import PAGE_PROMPT_TOKENS, Operation, Param
from lmscope.viz.outputs import write_neurons

DEFAULT_PROMPT = "The Eiffel Tower is located in the city of"


def _fmt(value: float | None) -> str:
    return f"{value:+.4g}".ljust(11) if value is not None else "-".ljust(11)


def _report(r) -> list[str]:
    agree = r.agreement[0]
    spearman = f"{agree:.3f}" if agree == agree else "n/a (one method)"  # NaN: only one method was run
    lines = [f"{r.model}: {r.prompts[0]!r} -> {r.targets[0]!r} (P={r.target_prob[0]:.3f}); Spearman of the two "
             f"scores {spearman}"]
    lines += [f"  L{t['layer']:>2}.{t['neuron']:<5} contribution {_fmt(t['contribution'])} grad x act "
              f"{_fmt(t['gradxact'])}  writes {' '.join(repr(v) for v in t['vocab'][:5])}" for t in r.top[0]]
    return lines


NEURONS = Operation(
    "neurons", "MLP neurons that write the next token (forward contribution, gradient x activation)",
    (Param("prompt", "the prompt", required=True, default=DEFAULT_PROMPT, positional=True,
           page_max_tokens=PAGE_PROMPT_TOKENS),
     Param("target", "the target token's text (its first token is scored); default: the model's own next token")),
    NeuronConfig,
    run=lambda lm, p, cfg: find_neurons(lm, p["prompt"], p.get("target") or None, cfg),
    write=write_neurons,
    checks=(lambda p: check_prompt(p["prompt"]),),
    report=_report)
