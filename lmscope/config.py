"""Checks shared by the config dataclasses: each names the field and the value, in one :class:`ConfigError`."""

from __future__ import annotations

import math
from collections.abc import Iterable

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
