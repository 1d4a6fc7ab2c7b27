"""The SAE architectures lmscope knows: each registers its class, and the class says everything about itself.

An architecture is one module: a :class:`lmscope.methods.sae.arch.base.SparseAutoencoder` subclass whose class
attributes carry its defaults and behaviour (``name``, ``default_lr``, ``default_l1``, ``resamples``,
``sweep_knob``, ``saelens_architecture``, ...), decorated with :func:`register_sae_class`. Config checks, training
(learning rate, resampling, job names), saving and loading (SAELens names) and the sweep command all ask the class,
never a list of names. The built-in architectures register when :mod:`lmscope.methods.sae.arch` is imported, which
happens on the first question asked here.
"""

from __future__ import annotations

import importlib

from lmscope.errors import ConfigError

_CLASSES: dict[str, type] = {}


def register_sae_class(cls: type) -> type:
    """Make ``cls`` (a SparseAutoencoder subclass with a unique ``name``) an architecture; returns it (a decorator)."""
    if not getattr(cls, "name", ""):
        raise ConfigError(f"{cls.__name__} needs a class attribute `name` to be registered as an SAE architecture")
    known = _CLASSES.get(cls.name)
    if known is not None and known is not cls and known.__qualname__ != cls.__qualname__:
        raise ConfigError(f"an SAE architecture named {cls.name!r} is already registered ({known.__qualname__})")
    _CLASSES[cls.name] = cls
    return cls


def _builtins() -> None:
    importlib.import_module("lmscope.methods.sae.arch")


def architectures() -> tuple[str, ...]:
    """The names of every registered architecture, in registration order."""
    _builtins()
    return tuple(_CLASSES)


def sae_class(name: str) -> type:
    """The class of architecture ``name``; one clear error naming the known ones."""
    _builtins()
    if name not in _CLASSES:
        raise ConfigError(f"unknown SAE architecture {name!r}; known: {', '.join(_CLASSES)}")
    return _CLASSES[name]


def classes() -> list[type]:
    """Every registered class (what the SAELens loader asks in turn)."""
    _builtins()
    return list(_CLASSES.values())
