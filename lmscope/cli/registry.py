"""The command registry: each method family's CLI module registers its commands here with :func:`command`.

A command is a function ``run(args) -> exit code`` plus its positional arguments and extra options, the config
dataclasses whose fields become options, and, when it writes files, a default output folder (``--out``, checked
before the model loads). Its place in the groups, its help and its old names are in :mod:`lmscope.cli.table`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lmscope.cli.options import config_from_args
from lmscope.cli.table import BY_NAME
from lmscope.model.lm import LM
from lmscope.model.loading import load
from lmscope.viz.outputs import save_run

C = TypeVar("C")
Arg = tuple[tuple[str, ...], dict[str, Any]]


@dataclass(frozen=True)
class Command:
    """One subcommand."""

    name: str
    help: str
    run: Callable[[argparse.Namespace], int]
    args: tuple[Arg, ...] = ()
    configs: tuple[type, ...] = ()
    out: str | None = None  # default output folder; None: the command writes no files


COMMANDS: dict[str, Command] = {}


def arg(*flags: str, **kwargs: Any) -> Arg:
    """One argument of a command, as for ``ArgumentParser.add_argument``."""
    return flags, kwargs


def command(name: str, *args: Arg, configs: tuple[type, ...] = (), out: str | None = None):
    """Register the decorated function as the command ``name`` of :mod:`lmscope.cli.table` (its help is there)."""
    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = Command(name, BY_NAME[name].help, run, args, configs, out)
        return run

    return register


def load_model(args: argparse.Namespace, name: str | None = None) -> LM:
    """The model named by ``--model`` (or ``name``), on ``--device`` in ``--dtype``."""
    return load(name or args.model, device=args.device, dtype=args.dtype)


def config(args: argparse.Namespace, cls: type[C]) -> C:
    """The config dataclass ``cls`` built from the parsed options (its checks run here)."""
    return config_from_args(cls, args)


def out_dir(args: argparse.Namespace) -> Path:
    """The command's (already checked) output folder."""
    return Path(args.out)


def save_result(out: Path, result, summary_name: str) -> None:
    """Save ``result`` to ``out/result/`` and its summary to ``out/<summary_name>`` (JSON, atomically)."""
    save_run(out, result, summary_name)
