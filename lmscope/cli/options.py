"""Config dataclasses double as the command line: one ``--flag`` per field, with the field's default and help.

A field's metadata may hold ``help``, ``required`` (the option must be given: no default makes sense) and its bounds
(``min``, ``max``, ``max_items``, ``max_tokens``: shown in the help, checked by the config's ``__post_init__``).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, TypeVar

from lmscope.config import limits
from lmscope.errors import ConfigError

C = TypeVar("C")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_args(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one option per field of the config dataclass ``cls`` (help from ``field(metadata={"help": ...})``)."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} (paper defaults)")
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        required = bool(f.metadata.get("required"))
        bounds = limits(f.metadata)
        help_text = (f.metadata.get("help", "").replace("%", "%%") + ("" if required else f" (default: {default}")
                     + (f"; {bounds})" if bounds and not required else f" ({bounds})" if bounds else
                        "" if required else ")"))
        if tp is bool:
            group.add_argument(_flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                               help=help_text)
        elif typing.get_origin(tp) is tuple:
            group.add_argument(_flag(f.name), dest=f.name, nargs="+", default=default, help=help_text)
        else:
            kinds = (str,) if str in typing.get_args(tp) else (int, float, str)  # int | str ("auto"): parse later
            kind = next((t for t in kinds if tp is t or t in typing.get_args(tp)), str)
            choices = {"choices": f.metadata["choices"]} if "choices" in f.metadata else {}
            group.add_argument(_flag(f.name), dest=f.name, type=kind, default=None if required else default,
                               required=required, help=help_text, **choices)


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    """Build the config dataclass from parsed arguments (its ``__post_init__`` validates)."""
    values: dict[str, Any] = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if typing.get_origin(hints[name]) is tuple and isinstance(value, list):
            values[name] = tuple(_items(name, value, typing.get_args(hints[name])[:1]))
    return cls(**values)


def _items(name: str, values: list, kinds: tuple) -> list:
    """A list option's words as its field's item type (tuple[int, ...] takes whole numbers), or one ConfigError."""
    kind = kinds[0] if kinds and kinds[0] in (int, float) else None
    if kind is None:
        return values
    items = []
    for v in values:
        try:
            items.append(kind(v))
        except ValueError:
            what = "whole numbers" if kind is int else "numbers"
            raise ConfigError(f"{_flag(name)} takes {what}, got {v!r}") from None
    return items
