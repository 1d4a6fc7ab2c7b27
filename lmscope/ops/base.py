"""One description per operation: its parameters with their bounds, its config, what it runs and what it writes.

An :class:`Operation` is what the command line and the workbench both run: ``lmscope lens`` and the page's lens
task are the same operation, checked by the same :meth:`Operation.check` (types, required values, bounds, the
operation's own checks such as "the subject is in the prompt"), run by the same function and written to the same
run folder by the same writer. The command line builds its options from it (:mod:`lmscope.cli.operations`), the
workbench its form and its task (:mod:`lmscope.web.tasks`).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmscope.config import limits, token_bounds
from lmscope.errors import InputError
from lmscope.model.lm import LM

MAX_TEXT = 2000  # characters of one text parameter (checked before it is tokenized)
PAGE_PROMPT_TOKENS = 256  # tokens of a prompt run from the workbench (the command line takes the model's context)
Count = Callable[[str], int]  # text -> its number of tokens


@dataclass(frozen=True)
class Param:
    """An argument of an operation that is not a config field, with its bounds.

    ``min`` / ``max`` bound a number (``max``: a list's length); ``page_max_tokens`` bounds a text on the workbench
    only (a served model answers everyone; the command line takes what the model's context holds).
    """

    name: str
    help: str
    kind: type = str
    required: bool = False
    default: Any = None
    positional: bool = False  # on the command line: a positional argument, not --name
    min: int | None = None
    max: int | None = None
    page_max_tokens: int | None = None

    def bounds(self, page: bool = True) -> dict:
        """The declared bounds, as a config field's metadata holds them."""
        pairs = (("min", self.min), ("max", self.max), ("max_tokens", self.page_max_tokens if page else None))
        return {k: v for k, v in pairs if v is not None}

    @property
    def flag(self) -> str:
        """The command line's option for it."""
        return self.name if self.positional else "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Operation:
    """Something both the command line and the workbench run on one model."""

    name: str
    help: str
    params: tuple[Param, ...]
    config: type | None
    run: Callable[[LM, dict, Any], Any]  # (model, checked params, config) -> result
    write: Callable[[Any, Path], Any] | None  # (result, run folder) -> the folder (None: nothing to write)
    checks: tuple[Callable[[dict], None], ...] = ()  # the operation's own checks of its parameters
    report: Callable[[Any], list[str]] = lambda result: []  # lines the command line prints

    def configure(self, params: dict) -> Any:
        """The config dataclass from the parameters named like its fields (its checks and bounds run here)."""
        if self.config is None:
            return None
        hints = typing.get_type_hints(self.config)
        values = {f.name: _coerce(f.name, hints[f.name], params[f.name]) for f in dataclasses.fields(self.config)
                  if params.get(f.name) is not None}
        return self.config(**values)

    def check(self, params: Any, count: Count | None = None, page: bool = False) -> dict:
        """The parameters, checked: unknown names, missing or ill-typed values, bounds, the operation's checks.

        ``count`` (text -> tokens) bounds texts in tokens; ``page``: the workbench's bounds apply too.
        """
        if not isinstance(params, dict):
            raise InputError("params must be a JSON object")
        fields = {f.name for f in dataclasses.fields(self.config)} if self.config else set()
        known = {p.name for p in self.params} | fields
        unknown = sorted(set(params) - known)
        if unknown:
            raise InputError(f"{self.name} takes no parameter {unknown[0]!r} (it takes: {', '.join(sorted(known))})")
        for p in self.params:
            _check_param(self, p, params.get(p.name), count if page else None)
        for check in self.checks:
            check(params)
        config = self.configure(params)
        if config is not None and count is not None:
            token_bounds(config, count)
        return params


CHECKS: dict[type, tuple[Callable[[Any], bool], str]] = {
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    str: (lambda v: isinstance(v, str), "text"),
    tuple: (lambda v: isinstance(v, (list, tuple)), "a list"),
}


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """A JSON value as the config field's type, or :class:`InputError`."""
    options = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and options:
        hint = options[0]
    base = typing.get_origin(hint) or hint
    ok, what = CHECKS.get(base, (lambda v: True, ""))
    if not ok(value):
        raise InputError(f"{name} must be {what}")
    return tuple(value) if base is tuple else float(value) if base is float else value


CHECKS[list] = (lambda v: isinstance(v, list), "a list")


def _check_param(op: Operation, p: Param, value: Any, count: Count | None) -> None:
    if value in (None, "") and p.required:
        raise InputError(f"{op.name} needs {p.name!r}")
    ok, what = CHECKS[p.kind]
    if value is not None and not ok(value):
        raise InputError(f"{p.name} must be {what}")
    if isinstance(value, str) and len(value) > MAX_TEXT and count is not None:
        raise InputError(f"{p.name} is longer than {MAX_TEXT} characters")
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"{p.name} must be a finite number, got {value}")
    low, high = p.min if p.min is not None else -math.inf, p.max if p.max is not None else math.inf
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not low <= value <= high:
        raise InputError(f"{p.name} must be in {limits(p.bounds())}, got {value}")
    if isinstance(value, list) and p.max is not None and len(value) > p.max:
        raise InputError(f"{p.name} holds at most {p.max} items, got {len(value)}")
    if count is not None and p.page_max_tokens is not None and isinstance(value, str):
        n = count(value)
        if n > p.page_max_tokens:
            raise InputError(f"{p.name} is {n} tokens long; the workbench runs at most {p.page_max_tokens} "
                             "(the command line takes longer prompts)")
