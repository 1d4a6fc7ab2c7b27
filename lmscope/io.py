"""Artifacts on disk: a folder of ``cfg.json`` + ``tensors.safetensors``. No pickle anywhere.

Every result dataclass in lmscope inherits :class:`Result`, which saves tensor fields to safetensors and every
other field (strings, numbers, lists, dicts, nested config dataclasses) to JSON; a field holding a dict of tensors
is stored as tensors named ``field.key``, and loads them back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT_VERSION = 1
CFG_NAME = "cfg.json"
TENSORS_NAME = "tensors.safetensors"

R = TypeVar("R", bound="Result")


class ArtifactError(RuntimeError):
    """An artifact folder is missing, corrupt, or holds another kind of result."""


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (write a temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False))
    os.replace(tmp, path)


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


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    return value


def _from_json(tp: Any, value: Any) -> Any:
    """Rebuild nested config dataclasses and tuples from their JSON form, guided by the type hint."""
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        hints = typing.get_type_hints(tp)
        return tp(**{k: _from_json(hints.get(k, Any), v) for k, v in value.items()})
    origin = typing.get_origin(tp)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
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


class Result:
    """Mixin for result dataclasses: ``save(dir)`` and ``load(dir)`` as ``cfg.json`` + safetensors."""

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
                cfg[f.name] = _to_json(value)
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


# ---- long runs: one JSON line per finished item, resumable ---------------------------------------------------------
def read_run_records(path: Path) -> list[dict]:
    """The complete records of a (possibly interrupted) run's JSONL file; a torn last line is cut off the file."""
    path = Path(path)
    if not path.is_file():
        return []
    records, good_bytes = [], 0
    with path.open("rb") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # the run was killed while writing this line
            good_bytes += len(line)
    if good_bytes < path.stat().st_size:
        with path.open("r+b") as f:
            f.truncate(good_bytes)
    return records


def append_record(sink, record: dict) -> None:
    """Append one record as a JSON line and force it to disk (a kill loses at most the line being written)."""
    sink.write(json.dumps(record) + "\n")
    sink.flush()
    os.fsync(sink.fileno())


def check_run(out: Path, meta: dict) -> None:
    """Refuse to resume in ``out`` a run made with other settings (``meta``); record them for a new run."""
    path = Path(out) / "run.json"
    if path.is_file():
        saved = read_json(path)
        if saved != meta:
            raise ValueError(f"{out} holds a run of another model or configuration ({saved}); use another --out")
    else:
        write_json(path, meta)
