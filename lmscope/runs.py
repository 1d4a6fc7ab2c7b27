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
from pathlib import Path
from typing import IO

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
        probe = folder / ".lmscope-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise RunError(f"cannot write to the output folder {folder}: {err.strerror or err}") from err
    finally:
        for made in created if not keep else ():
            if made.is_dir():
                made.rmdir()
    return folder


def read_records(path: str | Path) -> list[dict]:
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


def append_record(sink: IO[str], record: dict) -> None:
    """Append one record as a JSON line and force it to disk (a kill loses at most the line being written)."""
    sink.write(json.dumps(record) + "\n")
    sink.flush()
    os.fsync(sink.fileno())


def check_settings(out: str | Path, settings: dict) -> None:
    """Refuse to resume in ``out`` a run made with other settings; record them for a new run."""
    path = Path(out) / SETTINGS
    settings = to_json(settings)
    if path.is_file():
        saved = read_json(path)
        if saved != settings:
            raise RunError(f"{out} holds a run of another model or configuration ({saved}); use another --out")
    else:
        write_json(path, settings)


class Run:
    """A resumable run in one output folder: ``done`` holds finished records by key; ``writer()`` appends more."""

    def __init__(self, out: str | Path, settings: dict, key: str):
        self.out = prepare_out(out)
        check_settings(self.out, settings)
        self.key = key
        self.done: dict = {r[key]: r for r in read_records(self.out / RECORDS)}

    def todo(self, items: list, key_of) -> list:
        """The items whose key has no record yet, in order."""
        return [item for item in items if key_of(item) not in self.done]

    @contextmanager
    def writer(self) -> Iterator[callable]:
        """A function that records one finished item (appended and flushed to disk at once)."""
        with (self.out / RECORDS).open("a") as sink:
            def write(record: dict) -> None:
                append_record(sink, record)
                self.done[record[self.key]] = record

            yield write
