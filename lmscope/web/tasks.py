"""What "Try it" runs on the loaded model: lens, trace, lesion, neurons, a ROME edit, generation and undo.

Each task checks its parameters before it is queued (one clear message, a 400), runs the library function, sends
the page its view at once, then writes a normal run folder (the same files as the command line, plus
``command.json``) that ``lmscope.load_result`` and the run listing read. Parameters are the command's: its
positional / named arguments and its config dataclass's fields, checked by the config's own ``__post_init__``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import threading
import time
import types
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmscope.config import limits, token_bounds
from lmscope.errors import InputError
from lmscope.io import write_json
from lmscope.methods.lens import LensConfig, logit_lens
from lmscope.methods.neurons import NeuronConfig, find_neurons
from lmscope.methods.rome import EditRequest, RomeConfig, rome_edit
from lmscope.methods.rome.evaluate import request_state
from lmscope.methods.stages import LesionConfig, lesion_prompt
from lmscope.methods.trace import TraceConfig, causal_trace
from lmscope.model.generate import greedy
from lmscope.model.lm import LM, check_prompt
from lmscope.progress import Cancelled
from lmscope.runs import now_iso, write_command_info
from lmscope.viz.outputs import write_lens, write_lesion, write_neurons, write_trace
from lmscope.web.jobs import Job
from lmscope.web.views import clean, edit_view, view

MAX_TEXT = 2000  # characters of one text parameter (checked before it is tokenized)
PROMPT_TOKENS = 256  # tokens of a prompt run from the page (the command line takes the model's context)
MAX_NEW_TOKENS = 64


@dataclass
class Workbench:
    """The server's state: the one model, where new runs go, and the ROME edits applied to it (undo: LIFO)."""

    lm: LM
    out: Path
    edits: list = field(default_factory=list)  # EditHandle, oldest first

    def __post_init__(self) -> None:
        self.out = Path(self.out)

    def edited(self) -> list[str]:
        """The edits in force, as text."""
        return [f"{h.edit.request.text} -> {h.edit.request.target!r} (layer {h.edit.layer})" for h in self.edits]


@dataclass(frozen=True)
class Param:
    """A task argument that is not a config field; its bounds as a config field's (``min`` / ``max``, tokens)."""

    name: str
    help: str
    required: bool = False
    kind: type = str
    min: int | None = None
    max: int | None = None
    max_tokens: int | None = None

    def bounds(self) -> dict:
        """The declared bounds, as a field's metadata would hold them."""
        return {k: v for k, v in (("min", self.min), ("max", self.max), ("max_tokens", self.max_tokens))
                if v is not None}


@dataclass(frozen=True)
class Task:
    """One thing the page can run."""

    name: str
    help: str
    run: Callable[[Workbench, dict, Any], dict]  # (bench, params, config) -> output (see execute)
    params: tuple[Param, ...] = ()
    config: type | None = None


def _config(cls: type | None, params: dict) -> Any:
    """The config dataclass from the parameters named like its fields (its checks run here)."""
    if cls is None:
        return None
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in params and params[f.name] is not None:
            values[f.name] = _coerce(f.name, hints[f.name], params[f.name])
    return cls(**values)


CHECKS: dict[type, tuple[Callable[[Any], bool], str]] = {
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    str: (lambda v: isinstance(v, str), "text"),
    tuple: (lambda v: isinstance(v, list), "a list"),
}


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """A JSON value as the config field's type, or :class:`InputError`."""
    options = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and options:
        if value is None:
            return None
        hint = options[0]
    base = typing.get_origin(hint) or hint
    ok, what = CHECKS.get(base, (lambda v: True, ""))
    if not ok(value):
        raise InputError(f"{name} must be {what}")
    return tuple(value) if base is tuple else float(value) if base is float else value


def check_params(task: Task, params: Any, count: Callable[[str], int] | None = None) -> dict:
    """The task's parameters, checked: unknown names, missing or ill-typed values, empty prompts, every bound.

    Text is bounded in tokens when ``count`` (text -> tokens, :func:`token_counter`) is given.
    """
    if not isinstance(params, dict):
        raise InputError("params must be a JSON object")
    fields = {f.name for f in dataclasses.fields(task.config)} if task.config else set()
    known = {p.name for p in task.params} | fields
    unknown = sorted(set(params) - known)
    if unknown:
        raise InputError(f"{task.name} takes no parameter {unknown[0]!r} (it takes: {', '.join(sorted(known))})")
    for p in task.params:
        _check_param(task, p, params.get(p.name))
    if "prompt" in params and task.name != "edit":
        check_prompt(params["prompt"])
    if count is not None:
        _check_tokens(task, params, count)
    if task.name in ("trace", "edit") and params["subject"] not in params["prompt"].replace("{}", params["subject"]):
        raise InputError(f"the subject {params['subject']!r} is not in the prompt {params['prompt']!r}")
    if task.name == "edit" and "{}" not in params["prompt"]:
        raise InputError("the edit prompt is a template with {} where the subject goes, e.g. '{} is located in'")
    config = _config(task.config, params)  # the config's own checks, bounds included
    if config is not None and count is not None:
        token_bounds(config, count)
    return params


def _check_param(task: Task, p: Param, value: Any) -> None:
    if value in (None, "") and p.required:
        raise InputError(f"{task.name} needs {p.name!r}")
    if value is not None and not isinstance(value, p.kind) or isinstance(value, bool) and p.kind is int:
        raise InputError(f"{p.name} must be {'text' if p.kind is str else 'an integer'}")
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise InputError(f"{p.name} is longer than {MAX_TEXT} characters")
    low, high = p.min if p.min is not None else -math.inf, p.max if p.max is not None else math.inf
    if isinstance(value, int) and not low <= value <= high:
        raise InputError(f"{p.name} must be in {limits(p.bounds())}, got {value}")


def token_counter(lm: LM) -> Callable[[str], int]:
    """A function text -> its number of tokens for ``lm``, on a copy of its tokenizer.

    Requests are checked in the server's thread while a job may be using the model's own tokenizer, and a fast
    tokenizer is not safe to share between threads.
    """
    tokenizer = copy.deepcopy(lm.tokenizer)
    return lambda text: len(tokenizer(text)["input_ids"])


def _check_tokens(task: Task, params: dict, count: Callable[[str], int]) -> None:
    """Text parameters within their bounds in tokens (an edit template is counted with its subject in place)."""
    for p in task.params:
        value = params.get(p.name)
        if p.max_tokens is None or not isinstance(value, str):
            continue
        text = value.replace("{}", params.get("subject") or "") if task.name == "edit" else value
        n = count(text)
        if n > p.max_tokens:
            raise InputError(f"{p.name} is {n} tokens long; the workbench runs at most {p.max_tokens} "
                             "(the command line takes longer prompts)")


# the tasks -----------------------------------------------------------------------------------------------------


def _lens(bench: Workbench, p: dict, cfg: LensConfig) -> dict:
    return {"result": logit_lens(bench.lm, p["prompt"], cfg), "write": write_lens}


def _trace(bench: Workbench, p: dict, cfg: TraceConfig) -> dict:
    result = causal_trace(bench.lm, p["prompt"], p["subject"], p.get("target") or None, cfg)
    return {"result": result, "write": write_trace}


def _lesion(bench: Workbench, p: dict, cfg: LesionConfig) -> dict:
    return {"result": lesion_prompt(bench.lm, p["prompt"], cfg), "write": write_lesion}


def _neurons(bench: Workbench, p: dict, cfg: NeuronConfig) -> dict:
    return {"result": find_neurons(bench.lm, p["prompt"], p.get("target") or None, cfg), "write": write_neurons}


def _edit(bench: Workbench, p: dict, cfg: RomeConfig) -> dict:
    request = EditRequest(p["prompt"], p["subject"], p["target"])
    new_tokens = int(p.get("max_new_tokens") or 20)
    before = request_state(bench.lm, request, new_tokens)
    handle = rome_edit(bench.lm, request, cfg)
    bench.edits.append(handle)
    after = request_state(bench.lm, request, new_tokens)
    summary = {**handle.edit.summary(), "before": before, "after": after}

    def write(edit, out: Path) -> None:
        edit.save(out / "result")
        write_json(out / "edit.json", summary)

    page = clean({"kind": "RomeEdit", "notes": [], **edit_view(handle.edit, summary)})
    return {"result": handle.edit, "write": write, "view": page}


def _generate(bench: Workbench, p: dict, cfg: None) -> dict:
    check_prompt(p["prompt"])
    new_tokens = int(p.get("max_new_tokens") or 20)
    return {"payload": {"prompt": p["prompt"], "generation": greedy(bench.lm, p["prompt"], new_tokens),
                        "edited": bench.edited()}}


def _undo(bench: Workbench, p: dict, cfg: None) -> dict:
    undone = bench.edited()
    while bench.edits:
        bench.edits.pop().undo()
    return {"payload": {"undone": undone}}


PROMPT = Param("prompt", "the prompt", required=True, max_tokens=PROMPT_TOKENS)
NEW_TOKENS = {"kind": int, "min": 1, "max": MAX_NEW_TOKENS}
TASKS: dict[str, Task] = {t.name: t for t in (
    Task("lens", "logit lens: the top token of every layer at every position", _lens, (PROMPT,), LensConfig),
    Task("trace", "causal trace: restore hidden / MLP / attention states of a noised subject", _trace,
         (PROMPT, Param("subject", "the subject, as it appears in the prompt", required=True),
          Param("target", "the answer traced (default: the model's top token)")), TraceConfig),
    Task("lesion", "delete (or swap) one block and compare the next tokens", _lesion, (PROMPT,), LesionConfig),
    Task("neurons", "MLP neurons that write the next token (forward contribution, gradient x activation)",
         _neurons, (PROMPT, Param("target", "the target token (default: the model's own next token)")),
         NeuronConfig),
    Task("edit", "ROME: rewrite one fact in the loaded model (undo restores it)", _edit,
         (Param("prompt", "template with {} for the subject, e.g. '{} is located in the city of'", required=True,
                max_tokens=PROMPT_TOKENS),
          Param("subject", "the subject", required=True, max_tokens=64),
          Param("target", "the new answer, e.g. ' Rome'", required=True, max_tokens=16),
          Param("max_new_tokens", "tokens generated before / after", **NEW_TOKENS)), RomeConfig),
    Task("generate", "greedy continuation on the model as it is now (edited or not)", _generate,
         (PROMPT, Param("max_new_tokens", "tokens generated", **NEW_TOKENS))),
    Task("undo", "undo every ROME edit (the weights come back bit for bit)", _undo),
)}


def describe() -> list[dict]:
    """The tasks and their parameters with defaults and help (the page builds its forms from this)."""
    out = []
    for t in TASKS.values():
        params = [{"name": p.name, "help": p.help, "required": p.required, "type": p.kind.__name__,
                   "default": None, **p.bounds(), "limits": limits(p.bounds())} for p in t.params]
        if t.config is not None:
            params += [{"name": f.name, "help": f.metadata.get("help", ""), "required": False,
                        "type": _type_name(f.type), "default": clean(_default(f)), "config": True,
                        **{k: f.metadata[k] for k in BOUNDS if k in f.metadata}, "limits": limits(f.metadata)}
                       for f in dataclasses.fields(t.config)]
        out.append({"name": t.name, "help": t.help, "params": params})
    return out


BOUNDS = ("min", "max", "max_items", "max_tokens")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return list(f.default) if isinstance(f.default, tuple) else f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _type_name(tp: Any) -> str:
    return tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))


# running one job -----------------------------------------------------------------------------------------------


@contextmanager
def cancel_points(lm: LM, cancel: threading.Event) -> Iterator[None]:
    """Stop at the next block of any forward pass once ``cancel`` is set: every task stops within a block's time.

    The hooks only read the flag (outputs are unchanged) and are removed when the job ends.
    """
    def stop(module, args) -> None:
        if cancel.is_set():
            raise Cancelled("cancelled by the user")

    handles = [block.register_forward_pre_hook(stop) for block in lm.layout.blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def execute(bench: Workbench, job: Job, emit: Callable[[str, dict], None], register: Callable[[Path], str]) -> None:
    """Run ``job`` on the bench's model: emit its view, then write its run folder and emit the run's id."""
    task = TASKS[job.task]
    started = now_iso()
    torch.manual_seed(0)  # as the command line's default --seed
    emit("progress", {"desc": task.name, "n": 0, "total": None, "rate": None})
    with cancel_points(bench.lm, job.cancel):
        output = task.run(bench, job.params, _config(task.config, job.params))
    if "payload" in output:
        emit("result", {"payload": clean(output["payload"])})
        return
    result = output["result"]
    emit("result", {"view": output.get("view") or view(result)})
    out = bench.out / f"{job.task}-{time.strftime('%Y%m%d-%H%M%S')}-{job.id}"
    output["write"](result, out)
    write_command_info(out, command=job.task, params=job.params, model=bench.lm.name, via="serve",
                       edited=bench.edited(), started=started, finished=now_iso())
    emit("run", {"run": register(out)})
