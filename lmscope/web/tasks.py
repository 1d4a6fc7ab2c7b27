"""What "Try it" runs on the loaded model: the operations of :mod:`lmscope.ops`, generation and undo.

The operations (lens, trace, lesion, neurons, a ROME edit) are the command line's; generation and undo act on the
served model's state; an attribution graph and a clamp of its features run over the transcoders the workbench was
started with (``serve --transcoders``), listed only then. An operation's parameters are checked before it is
queued by the same :meth:`lmscope.ops.Operation.check` as the command line's, with the workbench's own bounds on
prompts (in tokens); it runs the same function, sends the page its view at once, then writes the same run folder as
the command line (plus ``command.json``), which ``lmscope.load_result`` and the run listing read. A ROME edit stays
applied, listed in the header, until undo.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmscope.config import limits
from lmscope.errors import InputError
from lmscope.methods.graphs import AttributionGraph, GraphConfig, attribution_graph, clamp, head_loadings
from lmscope.model.generate import greedy
from lmscope.model.lm import LM, check_prompt
from lmscope.ops import OPERATIONS, PAGE_PROMPT_TOKENS, EditOutcome, Operation, Param
from lmscope.ops.edit import MAX_NEW_TOKENS
from lmscope.progress import Cancelled
from lmscope.runs import now_iso, write_command_info
from lmscope.viz.outputs import write_graph
from lmscope.web.jobs import WebJob
from lmscope.web.views import clean, edit_view, view

PROMPT_TOKENS = PAGE_PROMPT_TOKENS


@dataclass
class Workbench:
    """The server's state: the one model, where new runs go, and the ROME edits applied to it (undo: LIFO)."""

    lm: LM
    out: Path
    edits: list = field(default_factory=list)  # EditHandle, oldest first
    transcoders: dict = field(default_factory=dict)  # layer -> LayerTranscoder (serve --transcoders); none: no graphs
    transcoder_source: str = ""  # the folder they came from

    def __post_init__(self) -> None:
        self.out = Path(self.out)

    def need_transcoders(self) -> dict:
        """The served transcoders, or one line saying how to serve some."""
        if not self.transcoders:
            raise InputError("the workbench serves no transcoders: start it with lmscope serve --transcoders FOLDER")
        return self.transcoders

    def edited(self) -> list[str]:
        """The edits in force, as text."""
        return [f"{h.edit.request.text} -> {h.edit.request.target!r} (layer {h.edit.layer})" for h in self.edits]


# the two tasks that act on the served model's state (their run takes the workbench, not the model) ------------
def _generate(bench: Workbench, p: dict, cfg: None) -> dict:
    new_tokens = int(p.get("max_new_tokens") or 20)
    return {"prompt": p["prompt"], "generation": greedy(bench.lm, p["prompt"], new_tokens), "edited": bench.edited()}


def _undo(bench: Workbench, p: dict, cfg: None) -> dict:
    undone = bench.edited()
    while bench.edits:
        bench.edits.pop().undo()
    return {"undone": undone}


def _graph(bench: Workbench, p: dict, cfg: GraphConfig) -> AttributionGraph:
    transcoders = bench.need_transcoders()
    result = attribution_graph(bench.lm, p["prompt"], transcoders, cfg, targets=[p["target"]] if p.get("target") else
                               None, source=bench.transcoder_source)
    if p.get("head_loadings"):
        result.heads = [e.as_dict() for e in head_loadings(bench.lm, result, transcoders, p["head_loadings"])]
    return result


def _clamp(bench: Workbench, p: dict, cfg: None) -> dict:
    out = clamp(bench.lm, p["prompt"], bench.need_transcoders(), [tuple(f) for f in p["features"]],
                p.get("scale", 0.0), p.get("value")).as_dict()
    built = p.get("graph_transcoders")
    if built and Path(built).resolve() != Path(bench.transcoder_source).resolve():
        out["note"] = (f"the graph was built over {built}; the workbench serves {bench.transcoder_source}: the clamped "
                       "features are those of the served transcoders")
    return out


def _check_features(p: dict) -> None:
    for f in p["features"]:
        if not (isinstance(f, list) and len(f) == 3 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                            for v in f)):
            raise InputError(f"each of features is [layer, position, feature] (three whole numbers >= 0), got {f!r}")


PROMPT = Param("prompt", "the prompt", required=True, positional=True, page_max_tokens=PAGE_PROMPT_TOKENS)
GRAPH = Operation("graph", "attribution graph of the prompt's next-token logits over the served transcoders",
                  (PROMPT, Param("target", "explain this next token (one token, e.g. ' Paris') instead of the "
                                           "most likely ones"),
                   Param("head_loadings", "attention heads of the N strongest kept edges", kind=int, min=0, max=50)),
                  GraphConfig, run=_graph, write=write_graph, checks=(lambda p: check_prompt(p["prompt"]),))
CLAMP = Operation("clamp", "set transcoder features of the prompt to scale x their activation (or to value) and "
                           "compare the next tokens",
                  (PROMPT, Param("features", "[layer, position, feature] triples", kind=list, required=True, max=32),
                   Param("scale", "new activation = scale x the old (0 removes)", kind=float, min=-100, max=100),
                   Param("value", "new activation (instead of scale)", kind=float, min=-1e4, max=1e4),
                   Param("graph_transcoders", "the transcoders the clicked graph was built over")),
                  None, run=_clamp, write=None, checks=(lambda p: check_prompt(p["prompt"]), _check_features))
GENERATE = Operation("generate", "greedy continuation on the model as it is now (edited or not)",
                     (PROMPT, Param("max_new_tokens", "tokens generated", kind=int, min=1, max=MAX_NEW_TOKENS)),
                     None, run=_generate, write=None, checks=(lambda p: check_prompt(p["prompt"]),))
UNDO = Operation("undo", "undo every ROME edit (the weights come back bit for bit)", (), None, run=_undo,
                 write=None)
STATEFUL = {"generate", "undo", "clamp"}  # their output is a payload, not a result with a run folder
ON_BENCH = STATEFUL | {"graph"}  # their run takes the workbench (its edits, its transcoders), not the model
NEEDS_TRANSCODERS = {"graph", "clamp"}
TASKS: dict[str, Operation] = {**OPERATIONS, "graph": GRAPH, "clamp": CLAMP, "generate": GENERATE, "undo": UNDO}


def check_params(task: Operation, params: Any, count: Callable[[str], int] | None = None) -> dict:
    """The task's parameters, checked as the command line checks them, plus the workbench's bounds on texts.

    Text is bounded in tokens when ``count`` (text -> tokens, :func:`token_counter`) is given.
    """
    return task.check(params, count, page=True)


def token_counter(lm: LM) -> Callable[[str], int]:
    """A function text -> its number of tokens for ``lm``, on a copy of its tokenizer.

    Requests are checked in the server's thread while a job may be using the model's own tokenizer, and a fast
    tokenizer is not safe to share between threads.
    """
    tokenizer = copy.deepcopy(lm.tokenizer)
    return lambda text: len(tokenizer(text)["input_ids"])


SHOWN = ("min", "max", "max_items", "max_tokens", "choices")  # field metadata the page gets


def describe(transcoders: bool = True) -> list[dict]:
    """The tasks and their parameters with defaults, bounds and help (the page builds its forms from this).

    ``transcoders``: whether the workbench serves transcoders (without, the graph tasks are not listed).
    """
    out = []
    for t in TASKS.values():
        if t.name in NEEDS_TRANSCODERS and not transcoders:
            continue
        params = [{"name": p.name, "help": p.help, "required": p.required, "type": p.kind.__name__,
                   "default": None, **p.bounds(), "limits": limits(p.bounds())} for p in t.params]
        if t.config is not None:
            params += [{"name": f.name, "help": f.metadata.get("help", ""), "required": False,
                        "type": _type_name(f.type), "default": clean(_default(f)), "config": True,
                        **{k: f.metadata[k] for k in SHOWN if k in f.metadata}, "limits": limits(f.metadata)}
                       for f in dataclasses.fields(t.config)]
        out.append({"name": t.name, "help": t.help, "params": params})
    return out


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


def execute(bench: Workbench, job: WebJob, emit: Callable[[str, dict], None], register: Callable[[Path], str]) -> None:
    """Run ``job`` on the bench's model: emit its view, then write its run folder and emit the run's id."""
    task = TASKS[job.task]
    started = now_iso()
    torch.manual_seed(0)  # as the command line's default --seed
    emit("progress", {"desc": task.name, "n": 0, "total": None, "rate": None})
    with cancel_points(bench.lm, job.cancel):
        if task.name in STATEFUL:
            emit("result", {"payload": clean(task.run(bench, job.params, None))})
            return
        result = task.run(bench if task.name in ON_BENCH else bench.lm, job.params, task.configure(job.params))
    if isinstance(result, EditOutcome):
        bench.edits.append(result.handle)
        emit("result", {"view": clean({"kind": "RomeEdit", "notes": [], **edit_view(result.edit, result.summary())})})
    else:
        emit("result", {"view": view(result)})
    out = bench.out / f"{job.task}-{time.strftime('%Y%m%d-%H%M%S')}-{job.id}"
    task.write(result, out)
    write_command_info(out, command=job.task, params=job.params, model=bench.lm.name, via="serve",
                       edited=bench.edited(), started=started, finished=now_iso())
    emit("run", {"run": register(out)})
