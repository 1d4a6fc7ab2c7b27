"""Checks shared by the config dataclasses: each names the field and the value, in one :class:`ConfigError`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping

from lmscope.errors import ConfigError


def _flag(name: str) -> str:
    return name.replace("_", "-")


def at_least(config: object, minimum: float, *names: str) -> None:
    """Every named field is a finite number >= ``minimum``."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < minimum:
            raise ConfigError(f"{_flag(name)} must be a number >= {minimum:g}, got {value!r}")


def positive(config: object, *names: str) -> None:
    """Every named field is a finite number > 0."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{_flag(name)} must be a number > 0, got {value!r}")


def finite(config: object, *names: str) -> None:
    """Every named field that is set (not None) is a finite number."""
    for name in names:
        value = getattr(config, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise ConfigError(f"{_flag(name)} must be a finite number, got {value!r}")


def one_of(config: object, name: str, choices: Iterable[str]) -> None:
    """The named field is one of ``choices``."""
    choices = tuple(choices)
    if getattr(config, name) not in choices:
        raise ConfigError(f"{_flag(name)} must be one of {', '.join(choices)}, got {getattr(config, name)!r}")


def bounds(config: object) -> None:
    """Every field's declared bounds hold: ``min`` / ``max`` for numbers (each item of a tuple too), ``max_items``.

    They are declared in the field's metadata, so the command line's help and the workbench's form show the same
    limits that are checked here; text limits in tokens (``max_tokens``) are checked by :func:`token_bounds`.
    """
    for f in dataclasses.fields(config):
        lo, hi, most = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("max_items")
        value = getattr(config, f.name)
        items = value if isinstance(value, (tuple, list)) else (value,)
        if most is not None and isinstance(value, (tuple, list)) and len(value) > most:
            raise ConfigError(f"{_flag(f.name)} takes at most {most} values, got {len(value)}")
        for v in items:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue  # text ("auto") and None are the field's own checks' business
            if not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
                raise ConfigError(f"{_flag(f.name)} must be in {limits(f.metadata)}, got {v!r}")


def limits(meta: Mapping) -> str:
    """The declared bounds of a field as text, e.g. '1..1000', '<= 64 tokens' ('' when none)."""
    lo, hi = meta.get("min"), meta.get("max")
    parts = []
    if lo is not None or hi is not None:
        parts.append(f"{_num(lo)}..{_num(hi)}")
    if meta.get("max_items") is not None:
        parts.append(f"at most {meta['max_items']} values")
    if meta.get("max_tokens") is not None:
        parts.append(f"at most {meta['max_tokens']} tokens")
    return ", ".join(parts)


def token_bounds(config: object, count: Callable[[str], int]) -> None:
    """Every text field with a ``max_tokens`` bound is that short, counted by ``count`` (a tokenizer's length)."""
    for f in dataclasses.fields(config):
        most, value = f.metadata.get("max_tokens"), getattr(config, f.name)
        if most is not None and isinstance(value, str) and count(value) > most:
            raise ConfigError(f"{_flag(f.name)} is {count(value)} tokens long; at most {most} are allowed")


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:g}"
