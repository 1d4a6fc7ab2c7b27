"""The ``lmscope`` command: the parser built from the registry, and the one place user errors are reported."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch

from lmscope.cli import (  # noqa: F401  (each registers its commands)
    autointerp,
    lens,
    model,
    neurons,
    patching,
    projector,
    rome,
    sae,
    serve,
    stages,
    trace,
)
from lmscope.cli.options import add_config_args
from lmscope.cli.registry import COMMANDS, global_options
from lmscope.errors import LmscopeError
from lmscope.runs import now_iso, prepare_out, write_command_info

log = logging.getLogger("lmscope")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser: one subparser per registered command."""
    parser = argparse.ArgumentParser(prog="lmscope", parents=[global_options(defaults=True)],
                                     description="Find, decompose and edit what a transformer language model knows.")
    sub = parser.add_subparsers(dest="command", required=True)
    shared = global_options(defaults=False)
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.run.__doc__, parents=[shared])
        for flags, kwargs in cmd.args:
            p.add_argument(*flags, **kwargs)
        if cmd.out is not None:
            p.add_argument("--out", type=Path, default=Path(cmd.out), help=f"output folder (default: {cmd.out})")
        for cls in cmd.configs:
            add_config_args(p, cls)
    return parser


def _record(args: argparse.Namespace, argv: list[str], started: str) -> None:
    """Say in ``--out/command.json`` which command made the folder (rank 0, on success; the workbench lists it)."""
    if COMMANDS[args.command].out is None or os.environ.get("RANK", "0") != "0" or not Path(args.out).is_dir():
        return
    try:
        write_command_info(args.out, command=args.command, argv=argv, model=args.model, via="cli",
                           started=started, finished=now_iso())
    except (OSError, LmscopeError) as err:  # the record is a courtesy: never fail a run for it
        log.warning("could not write %s/command.json: %s", args.out, err)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lmscope`` command; a user error is one line on stderr and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="lmscope: %(message)s")
    torch.manual_seed(args.seed)
    cmd = COMMANDS[args.command]
    try:
        if cmd.out is not None:
            # before the model loads: a bad --out fails at once (under torchrun the ranks share the folder: kept)
            prepare_out(args.out, keep=int(os.environ.get("WORLD_SIZE", "1")) > 1)
        started = now_iso()
        code = cmd.run(args)
        if code == 0:
            _record(args, argv, started)
        return code
    except LmscopeError as err:
        print(f"lmscope {args.command}: error: {err}", file=sys.stderr)
    except OSError as err:
        print(f"lmscope {args.command}: error: {err}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"lmscope {args.command}: interrupted (long runs resume from their output folder)", file=sys.stderr)
        return 130
    return 2
