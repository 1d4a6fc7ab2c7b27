"""Run folders under the workbench's result directories: listing, reading, and files served without escaping them.

A run is a folder with ``result/cfg.json`` (what every command writes) or a bare result folder (``cfg.json`` with a
``kind``). Its id is ``<root index>/<path below the root>``; every path a request names is resolved (symlinks
included) and must stay inside its root, so ``..``, encoded or not, absolute paths and symlinks out are refused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from lmscope.errors import ArtifactError, InputError
from lmscope.io import CFG_NAME, read_json
from lmscope.runs import COMMAND_INFO

log = logging.getLogger(__name__)

MAX_DEPTH = 4  # run folders are looked for this deep below a root
SKIP = {".git", ".venv", "node_modules", "__pycache__", "checkpoint"}


class NotFound(InputError):
    """A run or file that does not exist (or is outside the result directories)."""


class BadName(NotFound):
    """A run id or file name that cannot name a file (control characters): a 400, not a 404."""


def _check_name(name: str) -> None:
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise BadName(f"{name!r} is not a file name (it has control characters)")


@dataclass(frozen=True)
class RunRef:
    """Where one run lives: its id, its folder and the folder holding its result's ``cfg.json``."""

    id: str
    folder: Path
    result: Path


def _result_folder(folder: Path) -> Path | None:
    """The folder with the run's result ``cfg.json``, or None when ``folder`` is not a run."""
    for candidate in (folder / "result", folder / "edit", folder):  # the CLI's layout, `edit`'s, a bare result
        cfg = candidate / CFG_NAME
        if cfg.is_file():
            try:
                if "kind" in json.loads(cfg.read_text()):
                    return candidate
            except (OSError, ValueError):
                return candidate  # a corrupt run is still listed (its view says what is wrong)
    return None


class RunIndex:
    """The run folders below a few root directories (``lmscope serve --results``)."""

    def __init__(self, roots: list[str | Path]):
        self.roots = [Path(r).resolve() for r in roots]

    def inside(self, root: int, relative: str) -> Path:
        """``relative`` below root ``root``, resolved; :class:`NotFound` when it leaves the root or is absent."""
        if not 0 <= root < len(self.roots):
            raise NotFound(f"no result directory {root}")
        _check_name(relative)
        if relative.startswith(("/", "\\")):
            raise NotFound("absolute paths are not served")
        base = self.roots[root]
        path = (base / relative).resolve()
        if path != base and not path.is_relative_to(base):
            raise NotFound("that path is outside the result directories")
        if not path.exists():
            raise NotFound(f"{relative or '.'} does not exist")
        return path

    def ref(self, run_id: str) -> RunRef:
        """The run with this id; :class:`NotFound` for anything else."""
        root, _, relative = run_id.partition("/")
        if not root.isdigit():
            raise NotFound(f"no run {run_id!r}")
        folder = self.inside(int(root), relative)
        result = _result_folder(folder) if folder.is_dir() else None
        if result is None:
            raise NotFound(f"{run_id!r} is not a run folder")
        return RunRef(run_id, folder, result)

    def file(self, run_id: str, name: str, suffixes: tuple[str, ...] = (".png", ".html", ".json")) -> Path:
        """A file inside a run folder with one of ``suffixes``; never one outside it, nor another type."""
        _check_name(name)
        ref = self.ref(run_id)
        if Path(name).suffix.lower() not in suffixes:
            raise NotFound(f"only {', '.join(suffixes)} files of a run are served, not {name!r}")
        path = (ref.folder / name).resolve()
        if not path.is_relative_to(ref.folder) or not path.is_file():
            raise NotFound(f"{name!r} is not a file of run {run_id!r}")
        return path

    def scan(self) -> list[dict]:
        """Every run below the roots, newest first, as listing entries."""
        runs = []
        for i, root in enumerate(self.roots):
            for folder in _walk(root, MAX_DEPTH):
                result = _result_folder(folder)
                if result is not None:
                    rel = folder.relative_to(root).as_posix()
                    runs.append(entry(RunRef(f"{i}/{'' if rel == '.' else rel}".rstrip("/"), folder, result)))
        return sorted(runs, key=lambda r: r["date"], reverse=True)


def _walk(root: Path, depth: int):
    """Folders below ``root`` up to ``depth`` levels, not following symlinks out of it."""
    if not root.is_dir():
        return
    yield root
    if depth == 0 or _result_folder(root) is not None:
        return  # a run's own subfolders (result/, ablation/) are part of it
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and p.name not in SKIP
                          and not p.name.endswith((".tmp", ".old")))
    except OSError:
        return
    for child in children:
        if child.is_symlink():
            continue
        yield from _walk(child, depth - 1)


def entry(ref: RunRef) -> dict:
    """One listing line: id, kind, model, date, title (the prompt), command and files, from small JSON files only."""
    info = _json_or_empty(ref.folder / COMMAND_INFO)
    cfg = _json_or_empty(ref.result / CFG_NAME)
    mtime = (ref.result / CFG_NAME).stat().st_mtime if (ref.result / CFG_NAME).exists() else 0
    date = info.get("finished") or datetime.fromtimestamp(mtime, timezone.utc).isoformat(timespec="seconds")
    command = info.get("command") or ""
    if info.get("argv"):
        command = "lmscope " + " ".join(_quote(a) for a in info["argv"])
    elif isinstance(info.get("params"), dict):  # a job of the workbench: its task and parameters
        command = f"{command} " + " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}"
                                           for k, v in info["params"].items())
    return {"id": ref.id, "name": ref.folder.name, "kind": cfg.get("kind", "?"),
            "model": cfg.get("model") or info.get("model") or "", "date": date, "title": _title(info, cfg),
            "command": command.strip(), "via": info.get("via", ""), "files": _files(ref.folder)}


def _title(info: dict, cfg: dict) -> str:
    """What a person recognises a run by: its prompt (an edit's with the subject in place), else ''."""
    params = info.get("params") if isinstance(info.get("params"), dict) else {}
    request = cfg.get("request") if isinstance(cfg.get("request"), dict) else {}
    prompt = params.get("prompt") or cfg.get("prompt") or request.get("prompt") or ""
    subject = params.get("subject") or request.get("subject") or ""
    if not isinstance(prompt, str):
        return ""
    return prompt.replace("{}", subject) if subject and "{}" in prompt else prompt


def _quote(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_./=:," for c in arg) else json.dumps(arg)


def _files(folder: Path) -> list[str]:
    """The PNG / HTML / JSON files directly in a run folder (what the page links to)."""
    try:
        return sorted(p.name for p in folder.iterdir()
                      if p.is_file() and p.suffix in {".png", ".html", ".json"} and not p.name.endswith(".tmp"))
    except OSError:
        return []


def _json_or_empty(path: Path) -> dict:
    try:
        value = read_json(path)
    except ArtifactError:
        return {}
    return value if isinstance(value, dict) else {}
