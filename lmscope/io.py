"""Artifacts on disk: a folder of ``cfg.json`` + ``tensors.safetensors``. No pickle anywhere.

Every result dataclass in lmscope inherits :class:`Result`, which saves tensor fields to safetensors and every
other field (strings, numbers, lists, dicts, nested config dataclasses) to JSON; a field holding a dict of tensors
is stored as tensors named ``field.key``, and loads them back. Each result class registers itself under its name,
which ``cfg.json`` records as ``kind``: :func:`load_result` reloads any saved result without knowing its class,
and :meth:`Result.summary` gives the readable JSON view that the command line, the docs generators and reports
share. All files are written atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lmscope.errors import ArtifactError

FORMAT_VERSION = 1
CFG_NAME = "cfg.json"
TENSORS_NAME = "tensors.safetensors"

R = TypeVar("R", bound="Result")


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Write JSON atomically (write a temporary file, then rename); returns the path.

    NaN and infinity are refused (they are not JSON, and a metric that is not finite is a failure to report, not
    a number to save): one :class:`ArtifactError` naming the field.
    """
    path = Path(path)
    value = to_json(obj)
    try:
        text = json.dumps(value, indent=indent, ensure_ascii=False, allow_nan=False)
    except ValueError as err:
        where = non_finite(value)
        raise ArtifactError(f"{path.name}: {where or 'a value'} is not a finite number; nothing was written "
                            "(an input gave a metric that cannot be computed)") from err
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def non_finite(value: Any, where: str = "") -> str | None:
    """The path (``key.0.name``) of the first NaN or infinity in a JSON value, else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where or 'the value'} ({value})"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = non_finite(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def read_json(path: Path) -> Any:
    """Read JSON, turning a missing or corrupt file into one clear :class:`ArtifactError`."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise ArtifactError(f"{path} does not exist") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path} is not valid JSON ({err}); the file is corrupt") from err


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save tensors atomically to a safetensors file."""
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, turning a missing or corrupt file into one clear :class:`ArtifactError`."""
    if not Path(path).is_file():
        raise ArtifactError(f"{path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ArtifactError(f"{path} is not a valid safetensors file ({err}); the file is corrupt") from err


def to_json(value: Any) -> Any:
    """Config dataclasses, tuples, tensors and dicts as plain JSON values (tensors as nested lists)."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


def _from_json(tp: Any, value: Any) -> Any:
    """Rebuild nested config dataclasses and tuples from their JSON form, guided by the type hint."""
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        hints = typing.get_type_hints(tp)
        return tp(**{k: _from_json(hints.get(k, Any), v) for k, v in value.items()})
    origin = typing.get_origin(tp)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return _from_json(arg, value)
    return value


def _is_tensor_dict(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _tensor_dict(folder: Path, tensors: dict, name: str, keys: list[str]) -> dict[str, torch.Tensor]:
    missing = [k for k in keys if f"{name}.{k}" not in tensors]
    if missing:
        raise ArtifactError(f"{folder}: tensors {name}.{missing[0]} missing; the artifact is incomplete")
    return {k: tensors[f"{name}.{k}"] for k in keys}


def replace_folder(tmp: Path, folder: Path) -> None:
    """Put the finished folder ``tmp`` in place of ``folder`` (a reader sees the old or the new one, never half)."""
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


class Result:
    """Mixin for result dataclasses: ``save(dir)`` and ``load(dir)`` as ``cfg.json`` + safetensors.

    Subclasses register under their class name (the ``kind`` in ``cfg.json``) for :func:`load_result`, and override
    :meth:`summary` with what a reader wants to see first.
    """

    kinds: ClassVar[dict[str, type[Result]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Result.kinds[cls.__name__] = cls

    def summary(self) -> dict:
        """A readable JSON view of the result (default: every non-tensor field)."""
        return {f.name: to_json(getattr(self, f.name)) for f in dataclasses.fields(self)  # type: ignore[arg-type]
                if not isinstance(getattr(self, f.name), torch.Tensor)}

    def save_atomic(self, path: str | Path) -> Path:
        """Save into a temporary folder, then replace ``path`` as a whole (checkpoints a kill must not tear)."""
        folder = Path(path)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.save(tmp)
        replace_folder(tmp, folder)
        return folder

    def save(self, path: str | Path) -> Path:
        """Save to the folder ``path`` (created if needed); returns it."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        tensors, cfg = {}, {"kind": type(self).__name__, "format": FORMAT_VERSION}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                tensors[f.name] = value
            elif _is_tensor_dict(value):
                tensors.update({f"{f.name}.{k}": v for k, v in value.items()})
                cfg[f.name] = {"tensor_keys": list(value)}
            else:
                cfg[f.name] = to_json(value)
        save_tensors(folder / TENSORS_NAME, tensors)
        write_json(folder / CFG_NAME, cfg)
        return folder

    @classmethod
    def load(cls: type[R], path: str | Path) -> R:
        """Load a result saved by :meth:`save`; a corrupt or foreign folder raises :class:`ArtifactError`."""
        folder = Path(path)
        cfg = read_json(folder / CFG_NAME)
        if not isinstance(cfg, dict) or cfg.get("kind") != cls.__name__:
            found = cfg.get("kind") if isinstance(cfg, dict) else type(cfg).__name__
            raise ArtifactError(f"{folder} holds a {found!r}, not a {cls.__name__}")
        tensors = load_tensors(folder / TENSORS_NAME)
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in tensors:
                kwargs[f.name] = tensors[f.name]
            elif isinstance(cfg.get(f.name), dict) and set(cfg[f.name]) == {"tensor_keys"}:
                kwargs[f.name] = _tensor_dict(folder, tensors, f.name, cfg[f.name]["tensor_keys"])
            elif f.name in cfg:
                kwargs[f.name] = _from_json(hints.get(f.name, Any), cfg[f.name])
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ArtifactError(f"{folder}: field {f.name!r} is missing; the artifact is incomplete")
        return cls(**kwargs)


def known_kinds() -> dict[str, type[Result]]:
    """Every result kind of lmscope: the method packages (where results are defined) are imported on first call.

    ``import lmscope`` imports nothing eagerly, so a kind registers itself only once its module is imported; the
    packages are found by walking ``lmscope.methods`` (no list to keep in step).
    """
    import importlib
    import pkgutil

    methods = importlib.import_module("lmscope.methods")
    for info in pkgutil.iter_modules(methods.__path__):
        importlib.import_module(f"lmscope.methods.{info.name}")
    return Result.kinds


RESULT_FOLDER = "result"  # where a command's --out folder keeps its result


def load_result(path: str | Path) -> Result:
    """Load any saved result; its class comes from the ``kind`` recorded in ``cfg.json``.

    ``path`` is a result folder, or a command's ``--out`` folder holding one in ``result/``.
    """
    folder = Path(path)
    if not (folder / CFG_NAME).is_file() and (folder / RESULT_FOLDER / CFG_NAME).is_file():
        folder = folder / RESULT_FOLDER
    cfg = read_json(folder / CFG_NAME)
    kind = cfg.get("kind") if isinstance(cfg, dict) else None
    if kind not in Result.kinds:
        known_kinds()
    if kind not in Result.kinds:
        known = ", ".join(sorted(Result.kinds))
        raise ArtifactError(f"{folder} holds no lmscope result I know (kind {kind!r}; known kinds: {known})")
    return Result.kinds[kind].load(folder)
