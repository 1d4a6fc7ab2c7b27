"""Commands made from operations (:mod:`lmscope.ops`): the workbench's tasks as commands.

The same parameters, checks, run and run folder as the workbench's; the command line adds its options and prints
the operation's report.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lmscope.cli.registry import arg, command, config, load_model, out_dir
from lmscope.config import limits
from lmscope.ops import Operation, Param


def param_arg(p: Param):
    """The command line's argument for an operation's parameter."""
    bounds = limits(p.bounds(page=False))
    help_text = p.help + (f" (default: {p.default!r})" if p.default is not None else "") + (
        f" ({bounds})" if bounds else "")
    kind = {"type": p.kind} if p.kind is not str else {}
    if p.positional:
        return arg(p.name, **({"nargs": "?", "default": p.default} if p.default is not None else {}), **kind,
                   help=help_text)
    return arg(p.flag, dest=p.name, default=p.default, required=p.required and p.default is None, **kind,
               help=help_text)


def params_of(op: Operation, args) -> dict:
    """The operation's parameters from parsed arguments, checked as the workbench checks them (bounds included)."""
    return op.check({p.name: getattr(args, p.name) for p in op.params if getattr(args, p.name) is not None})


def operation_command(name: str, op: Operation, out: str, wrote: str,
                      after: Callable | None = None) -> Callable:
    """Register the command ``name`` (see :mod:`lmscope.cli.table`) that runs ``op`` and writes its run folder.

    ``wrote``: what the folder holds, as printed; ``after(args, lm, result, out)``: more the command does.
    """
    def run(args) -> int:
        params = params_of(op, args)  # before the model loads: bad input fails fast
        cfg = config(args, op.config) if op.config is not None else None
        lm = load_model(args)
        result = op.run(lm, params, cfg)
        folder = Path(out_dir(args))
        op.write(result, folder)
        for line in op.report(result):
            print(line)
        if after is not None:
            after(args, lm, result, folder)
        print(f"wrote {folder}/{wrote}")
        return 0

    run.__doc__ = f"{op.help[0].upper()}{op.help[1:]}; write {wrote}."
    return command(name, *(param_arg(p) for p in op.params), configs=(op.config,) if op.config else (), out=out)(run)
