"""A ROME edit of one fact with P(target) and the continuation before and after, as an operation.

``lmscope rome edit`` and the workbench's edit; the edit stays applied (the caller undoes it, or keeps it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmscope.io import write_json
from lmscope.methods.rome import EditRequest, RomeConfig, RomeEdit, rome_edit
from lmscope.methods.rome.evaluate import request_state
from lmscope.model.weights import EditHandle
from lmscope.ops.base import PAGE_PROMPT_TOKENS, Operation, Param
from lmscope.ops.trace import subject_in_prompt

MAX_NEW_TOKENS = 64


@dataclass
class EditOutcome:
    """An applied edit and the model's answer before and after it."""

    handle: EditHandle[RomeEdit]
    before: dict  # {"p_target", "generation"}
    after: dict

    @property
    def edit(self) -> RomeEdit:
        """The edit as data (savable, applies to a fresh model with ``lmscope.apply_edit``)."""
        return self.handle.edit

    def summary(self) -> dict:
        """The edit's summary with the states before and after (what edit.json holds)."""
        return {**self.edit.summary(), "before": self.before, "after": self.after}


def _run(lm, p: dict, cfg: RomeConfig) -> EditOutcome:
    request = EditRequest(p["prompt"], p["subject"], p["target"])
    new_tokens = int(p.get("max_new_tokens") or 20)
    before = request_state(lm, request, new_tokens)
    handle = rome_edit(lm, request, cfg)
    return EditOutcome(handle, before, request_state(lm, request, new_tokens))


def write_edit(outcome: EditOutcome, out: str | Path) -> Path:
    """result/ (the edit) and edit.json (its summary, before and after) of a ROME edit."""
    out = Path(out)
    outcome.edit.save(out / "result")
    write_json(out / "edit.json", outcome.summary())
    return out


def _report(o: EditOutcome) -> list[str]:
    e, text = o.edit, o.edit.request.text
    where = e.layer_source if e.layer_source != "given" else f"layer {e.layer}"
    return [f"{e.model}: edited {where}", f"  {text!r} -> {e.request.target!r}",
            f"  before: P(target) = {o.before['p_target']:.4f}   {text}{o.before['generation']!r}",
            f"  after:  P(target) = {o.after['p_target']:.4f}   {text}{o.after['generation']!r}"]


EDIT = Operation(
    "edit", "ROME: rewrite one fact in the model (the workbench keeps it until undo)",
    (Param("prompt", "template with {} for the subject, e.g. '{} is located in the city of'", required=True,
           page_max_tokens=PAGE_PROMPT_TOKENS),
     Param("subject", "the subject, e.g. 'The Eiffel Tower'", required=True, page_max_tokens=64),
     Param("target", "the new answer, e.g. ' Rome'", required=True, page_max_tokens=16),
     Param("max_new_tokens", "greedy tokens generated before / after", kind=int, default=20, min=1,
           max=MAX_NEW_TOKENS)),
    RomeConfig,
    run=_run,
    write=write_edit,
    checks=(lambda p: EditRequest(p["prompt"], p["subject"], p["target"]), subject_in_prompt),
    report=_report)
