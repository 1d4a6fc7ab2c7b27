"""Long runs: an output folder checked before any work, one JSON line per finished item, resumable after a kill.

A run keeps ``run.json`` (the settings it was started with) and ``records.jsonl`` in its output folder. A killed
run resumes from the records (a torn last line is cut off) and gives the same numbers as an uninterrupted one;
resuming with other settings is refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from lmscope.distributed import World
from lmscope.errors import RunError
from lmscope.io import read_json, to_json, write_json

RECORDS = "records.jsonl"
SETTINGS = "run.json"


def prepare_out(path: str | Path, keep: bool = True) -> Path:
    """Create the output folder ``path`` (with parents) and check that a file can be written there.

    Fails with one :class:`RunError` line. ``keep=False`` only checks: the folders it had to create are removed
    again (the command line checks ``--out`` this way before any work, and bad input then leaves nothing behind).
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise RunError(f"output folder {folder} is a file, not a folder; give a folder path")
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".lmscope-write-test-{os.getpid()}"  # one per process: ranks probe at the same time
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise RunError(f"cannot write to the output folder {folder}: {err.strerror or err}") from err
    finally:
        for made in created if not keep else ():
            if made.is_dir():
                made.rmdir()
    return folder


def read_records(path: str | Path, repair: bool = True) -> list[dict]:
    """The complete records of a (possibly interrupted) run's JSONL file; a torn last line is cut off the file.

    ``repair=False`` reads without cutting (another process may still be writing that file).
    """
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
    if repair and good_bytes < path.stat().st_size:
        with path.open("r+b") as f:
            f.truncate(good_bytes)
    return records


def folder_records(out: str | Path, repair: Path | None = None) -> list[dict]:
    """The records of every records file of a run folder (one per rank), in order.

    Only the file ``repair`` is cut after a kill; the others are read as they are (their runs may still be writing).
    """
    return [r for path in sorted(Path(out).glob("records*.jsonl")) for r in read_records(path, repair=path == repair)]


def append_record(sink: IO[str], record: dict) -> None:
    """Append one record as a JSON line and force it to disk (a kill loses at most the line being written)."""
    sink.write(json.dumps(record) + "\n")
    sink.flush()
    os.fsync(sink.fileno())


def first_difference(a, b, where: str = "settings") -> tuple[str, object, object]:
    """(path, value in a, value in b) of the first place two JSON values differ (depth first, keys in order)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key, _MISSING) != b.get(key, _MISSING):
                return first_difference(a.get(key, _MISSING), b.get(key, _MISSING), f"{where}.{key}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_difference(x, y, f"{where}[{i}]")
    return where, a, b


_MISSING = "(not set)"


def _short(value, limit: int = 80) -> str:
    text = value if value is _MISSING else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_settings(out: str | Path, settings: dict) -> None:
    """Refuse to resume in ``out`` a run made with other settings; record them for a new run."""
    path = Path(out) / SETTINGS
    settings = to_json(settings)
    if path.is_file():
        saved = read_json(path)
        if saved != settings:
            where, was, now = first_difference(saved, settings)
            raise RunError(f"{out} holds a run of another model or configuration ({where}: {_short(was)} there, "
                           f"{_short(now)} asked); use another --out")
    else:
        write_json(path, settings)


class Run:
    """A resumable run in one output folder: ``done`` holds finished records by key; ``writer()`` appends more.

    Under ``torchrun`` each rank writes its own ``records.rank<r>of<n>.jsonl`` and takes every n-th of the items
    not done yet; ``done`` is read from every records file of the folder, so a run resumes on any number of ranks.
    """

    def __init__(self, out: str | Path, settings: dict, key: str, world: World | None = None):
        self.world = world or World()
        self.out = prepare_out(out)
        self.world.on_main(lambda: check_settings(self.out, settings))
        self.key = key
        w = self.world
        self.records = self.out / (RECORDS if w.size == 1 else f"records.rank{w.rank}of{w.size}.jsonl")
        self.done: dict = self.read()
        w.barrier()  # every rank has read the same records before any rank writes

    def read(self) -> dict:
        """Every finished record in the folder, by key (this rank's own file repaired after a kill)."""
        return {r[self.key]: r for r in folder_records(self.out, repair=self.records)}

    def todo(self, items: list, key_of) -> list:
        """The share of this rank of the items whose key has no record yet, in order."""
        return [item for item in items if key_of(item) not in self.done][self.world.rank::self.world.size]

    def merged(self) -> dict:
        """After every rank has finished: all records of the folder, by key."""
        self.world.barrier()
        return self.read()

    @contextmanager
    def writer(self) -> Iterator[callable]:
        """A function that records one finished item (appended and flushed to disk at once)."""
        with self.records.open("a") as sink:
            def write(record: dict) -> None:
                append_record(sink, record)
                self.done[record[self.key]] = record

            yield write


COMMAND_INFO = "command.json"


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_command_info(out: str | Path, **fields) -> dict:
    """Write ``out/command.json``: who made this run folder, how and when (the workbench lists it)."""
    info = to_json(fields)
    write_json(Path(out) / COMMAND_INFO, info)
    return info
