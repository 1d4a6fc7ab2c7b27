"""The ``lmscope`` command: groups of subcommands (as git's), each command's module imported only once chosen.

``lmscope --help`` and ``lmscope GROUP --help`` are answered from :mod:`lmscope.cli.table` alone (neither torch nor
transformers is imported); ``lmscope GROUP COMMAND ...`` imports that command's module, builds its parser from the
registry (``lmscope.cli.registry``) and runs it. Old flat names (``sae-train``, ``edit``, ...) are rewritten to
their group and subcommand before parsing. This is also the one place user errors are reported: one line on
stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from lmscope.cli.table import ALIASES, BY_PATH, DEFAULT_SUB, ENTRIES, GROUPS, VALUE_OPTIONS, Entry
from lmscope.defaults import DEFAULT_MODEL, DTYPE_NAMES
from lmscope.errors import LmscopeError

log = logging.getLogger("lmscope")
DESCRIPTION = "Find, decompose and edit what a transformer language model knows."


def global_options(defaults: bool) -> argparse.ArgumentParser:
    """The options valid before or after the subcommand.

    ``defaults=False`` gives the subcommand's copy, which must not overwrite a value given before the subcommand.
    """
    parent = argparse.ArgumentParser(add_help=False)
    value = (lambda v: v) if defaults else (lambda v: argparse.SUPPRESS)
    parent.add_argument("--model", default=value(DEFAULT_MODEL),
                        help=f"bundled name, local folder, .gguf file or hub id (default: {DEFAULT_MODEL})")
    parent.add_argument("--device", default=value("cpu"), help="torch device (default: cpu)")
    parent.add_argument("--dtype", default=value("float32"), choices=list(DTYPE_NAMES),
                        help="weight dtype (default: float32)")
    parent.add_argument("--seed", type=int, default=value(0), help="random seed (default: 0)")
    parent.add_argument("-q", "--quiet", action="store_true", default=value(False), help="only warnings")
    return parent


# ---- which command argv names ---------------------------------------------------------------------------------
def _positionals(argv: list[str]) -> list[int]:
    """Indices of the tokens that are not global options or their values (the first ones name the command)."""
    out, skip = [], False
    for i, token in enumerate(argv):
        if skip:
            skip = False
        elif token in VALUE_OPTIONS:
            skip = True
        elif not token.startswith("-"):
            out.append(i)
    return out


def canonical(argv: list[str]) -> list[str]:
    """``argv`` with old flat command names rewritten: ``sae-train`` -> ``sae train``.

    A group that used to be a command gets its default subcommand: ``trace PROMPT`` -> ``trace run PROMPT``.
    """
    found = _positionals(argv)
    if not found:
        return argv
    i = found[0]
    word = argv[i]
    if word in ALIASES and word not in GROUPS:
        return [*argv[:i], *ALIASES[word].path, *argv[i + 1:]]
    if word in DEFAULT_SUB:
        subs = {e.path[1] for e in ENTRIES if e.path[0] == word}
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if nxt not in subs and nxt not in ("-h", "--help"):
            return [*argv[:i + 1], DEFAULT_SUB[word], *argv[i + 1:]]
    return argv


def chosen(argv: list[str]) -> Entry | None:
    """The command a canonical ``argv`` names (None: none, or only a group)."""
    found = _positionals(argv)
    if not found:
        return None
    first = argv[found[0]]
    if first in GROUPS and len(found) > 1:
        return BY_PATH.get((first, argv[found[1]]))
    return BY_PATH.get((first,))


# ---- parsers --------------------------------------------------------------------------------------------------
def _top() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(prog="lmscope", parents=[global_options(defaults=True)], description=DESCRIPTION)
    return parser, parser.add_subparsers(dest="command_word", metavar="COMMAND", required=True)


def _groups(sub, build_leaf) -> None:
    """One subparser per group (its subcommands inside) and per top-level command; ``build_leaf(entry, parser)``."""
    shared = global_options(defaults=False)
    group_parsers: dict[str, argparse._SubParsersAction] = {}
    for entry in ENTRIES:
        if len(entry.path) == 1:
            build_leaf(entry, sub.add_parser(entry.path[0], help=entry.help, parents=[shared]))
            continue
        group = entry.path[0]
        if group not in group_parsers:
            p = sub.add_parser(group, help=GROUPS[group], description=GROUPS[group], parents=[shared])
            group_parsers[group] = p.add_subparsers(dest="sub_word", metavar="COMMAND", required=True)
        build_leaf(entry, group_parsers[group].add_parser(entry.path[1], help=entry.help, parents=[shared]))


def _skeleton() -> argparse.ArgumentParser:
    """Groups and commands with their help only: enough for ``--help`` and for naming a command wrongly."""
    parser, sub = _top()
    _groups(sub, lambda entry, p: None)
    return parser


def _add_command(entry: Entry, parser: argparse.ArgumentParser) -> None:
    """The arguments, ``--out`` and config options of a command (its module is imported here)."""
    from lmscope.cli.options import add_config_args
    from lmscope.cli.registry import COMMANDS

    importlib.import_module(entry.module)
    cmd = COMMANDS[entry.name]
    parser.description = cmd.run.__doc__
    for flags, kwargs in cmd.args:
        parser.add_argument(*flags, **kwargs)
    if cmd.out is not None:
        parser.add_argument("--out", type=Path, default=Path(cmd.out), help=f"output folder (default: {cmd.out})")
    for cls in cmd.configs:
        add_config_args(parser, cls)
    parser.set_defaults(command=entry.name)


def build_parser(only: Entry | None = None) -> argparse.ArgumentParser:
    """The argument parser: every command (all their modules imported), or ``only`` one with its arguments."""
    parser, sub = _top()
    _groups(sub, lambda entry, p: _add_command(entry, p) if only is None or entry is only else None)
    return parser


# ---- running --------------------------------------------------------------------------------------------------
def _record(entry: Entry, args: argparse.Namespace, argv: list[str], started: str) -> None:
    """Say in ``--out/command.json`` which command made the folder (rank 0, on success; the workbench lists it)."""
    from lmscope.cli.registry import COMMANDS
    from lmscope.runs import now_iso, write_command_info

    if COMMANDS[entry.name].out is None or os.environ.get("RANK", "0") != "0" or not Path(args.out).is_dir():
        return
    try:
        write_command_info(args.out, command=entry.words, argv=argv, model=args.model, via="cli",
                           started=started, finished=now_iso())
    except (OSError, LmscopeError) as err:  # the record is a courtesy: never fail a run for it
        log.warning("could not write %s/command.json: %s", args.out, err)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lmscope`` command; a user error is one line on stderr and exit code 2."""
    typed = list(sys.argv[1:] if argv is None else argv)
    argv = canonical(typed)
    entry = chosen(argv)
    if entry is None:
        _skeleton().parse_args(argv)  # prints the help or names the mistake, and exits
        return 2
    args = build_parser(only=entry).parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="lmscope: %(message)s")
    try:
        return _run(entry, args, typed)
    except LmscopeError as err:
        print(f"lmscope {entry.words}: error: {err}", file=sys.stderr)
    except OSError as err:
        print(f"lmscope {entry.words}: error: {err}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"lmscope {entry.words}: interrupted (long runs resume from their output folder)", file=sys.stderr)
        return 130
    return 2


def _run(entry: Entry, args: argparse.Namespace, typed: list[str]) -> int:
    import torch

    from lmscope.cli.registry import COMMANDS
    from lmscope.runs import now_iso, prepare_out

    torch.manual_seed(args.seed)
    cmd = COMMANDS[entry.name]
    fresh = False
    if cmd.out is not None:
        # before the model loads: a bad --out fails at once (under torchrun the ranks share the folder: kept)
        fresh = not Path(args.out).exists()
        prepare_out(args.out, keep=int(os.environ.get("WORLD_SIZE", "1")) > 1)
    started = now_iso()
    try:
        code = cmd.run(args)
    except LmscopeError:
        if fresh:
            _discard_unfinished(Path(args.out))
        raise
    if code == 0:
        _record(entry, args, typed, started)
    return code


BOOKKEEPING = {"run.json", "manifest.json", "command.json", "records.jsonl"}


def _discard_unfinished(out: Path) -> None:
    """Remove the output folder a refused command created, when it holds nothing a rerun could resume from.

    Only bookkeeping files (``run.json``, ``manifest.json``, an empty ``records.jsonl``) count as nothing; a folder
    with a record, a checkpoint or a result is kept, so a failed long run still resumes.
    """
    if not out.is_dir():
        return
    files = [p for p in out.rglob("*") if p.is_file()]
    if all(p.name in BOOKKEEPING and (p.name != "records.jsonl" or p.stat().st_size == 0) for p in files):
        for p in files:
            p.unlink()
        for folder in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            folder.rmdir()
        out.rmdir()
        log.info("removed %s: the refused command left nothing a rerun could use", out)
