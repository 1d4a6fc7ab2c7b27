"""The command registry: each method family's CLI module registers its commands here with :func:`command`.

A command is a function ``run(args) -> exit code`` plus its positional arguments and extra options, the config
dataclasses whose fields become options, and, when it writes files, a default output folder (``--out``, checked
before the model loads). The global options (``--model``, ``--device``, ...) are one parent parser shared by all.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lmscope.cli.options import config_from_args
from lmscope.model.lm import LM
from lmscope.model.loading import DEFAULT_MODEL, DTYPES, load
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


def command(name: str, help: str, *args: Arg, configs: tuple[type, ...] = (), out: str | None = None):
    """Register the decorated function as the subcommand ``name``."""
    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = Command(name, help, run, args, configs, out)
        return run

    return register


def global_options(defaults: bool) -> argparse.ArgumentParser:
    """The options valid before or after the subcommand.

    ``defaults=False`` gives the subcommand's copy, which must not overwrite a value given before the subcommand.
    """
    parent = argparse.ArgumentParser(add_help=False)
    value = (lambda v: v) if defaults else (lambda v: argparse.SUPPRESS)
    parent.add_argument("--model", default=value(DEFAULT_MODEL),
                        help=f"bundled name, local folder, .gguf file or hub id (default: {DEFAULT_MODEL})")
    parent.add_argument("--device", default=value("cpu"), help="torch device (default: cpu)")
    parent.add_argument("--dtype", default=value("float32"), choices=list(DTYPES),
                        help="weight dtype (default: float32)")
    parent.add_argument("--seed", type=int, default=value(0), help="random seed (default: 0)")
    parent.add_argument("-q", "--quiet", action="store_true", default=value(False), help="only warnings")
    return parent


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
