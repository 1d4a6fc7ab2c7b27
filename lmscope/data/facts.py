"""Loaders for the factual-recall datasets: known_1000 (ROME's causal-tracing set), CounterFact and IOI.

Every loader takes a path and returns a list of frozen records. Records are checked on the way in: a record
whose subject is not in its prompt, or a file with missing fields, is one :class:`DataError` naming the file and
the record, never a silent skip. CounterFact is read in both layouts in circulation: the flattened EasyEdit
layout (``../shared/data``) and ROME's original nested ``counterfact.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmscope.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnownFact:
    """One fact of known_1000: ``prompt`` = ``template.format(subject)`` (+ " of" etc.), answer ``attribute``."""

    known_id: int
    subject: str
    attribute: str  # the true object, e.g. "Antarctica"
    template: str  # with "{}" for the subject
    prompt: str  # the prompt used for tracing
    prediction: str  # GPT-2 XL's greedy continuation when the set was built
    relation_id: str


@dataclass(frozen=True)
class CounterFactRecord:
    """One CounterFact case: rewrite ``template.format(subject)`` from ``target_true`` to ``target_new``.

    Targets are stored as given by the dataset (without a leading space); :attr:`new` / :attr:`true` give the
    form the models see as a continuation (" Rome").
    """

    case_id: int
    subject: str
    template: str  # the rewrite prompt with "{}" for the subject
    target_new: str
    target_true: str
    paraphrase_prompts: tuple[str, ...]
    neighborhood_prompts: tuple[str, ...]  # other subjects whose true answer is target_true
    generation_prompts: tuple[str, ...] = ()  # only in the original layout (for GE)
    relation_id: str = ""

    @property
    def prompt(self) -> str:
        """The rewrite prompt with the subject filled in."""
        return self.template.format(self.subject)

    @property
    def new(self) -> str:
        """``target_new`` as a continuation, with its leading space."""
        return _as_continuation(self.target_new)

    @property
    def true(self) -> str:
        """``target_true`` as a continuation, with its leading space."""
        return _as_continuation(self.target_true)


@dataclass(frozen=True)
class IOIPrompt:
    """An indirect-object-identification prompt; ``answer`` is the indirect object's name."""

    case_id: int
    prompt: str
    answer: str
    flags: dict[str, Any] = field(default_factory=dict, compare=False)  # per-model columns of the file


def _as_continuation(text: str) -> str:
    return text if text.startswith(" ") else " " + text


def read_records(path: str | Path) -> list[dict]:
    """Read a JSON list (or JSON-lines) file of records, with one clear error for every way it can fail."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}): not a JSON file") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            raise DataError(f"{path}: not valid JSON or JSON lines ({err})") from err
    if isinstance(data, dict):
        data = data.get("data", data.get("records"))
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path}: expected a JSON list of objects")
    if not data:
        raise DataError(f"{path}: the file holds no records")
    return data


def _need(path: Path, i: int, record: dict, *keys: str) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise DataError(f"{path}: record {i} lacks {', '.join(missing)} (has {', '.join(sorted(record))})")


def _take(records: list[dict], limit: int | None) -> list[dict]:
    if limit is not None and limit < 1:
        raise DataError(f"limit must be >= 1, got {limit}")
    return records if limit is None else records[:limit]


def load_known_facts(path: str | Path, limit: int | None = None) -> list[KnownFact]:
    """Load ROME's known_1000.json (1,209 facts). ``limit`` keeps the first records."""
    path = Path(path)
    facts = []
    for i, r in enumerate(_take(read_records(path), limit)):
        _need(path, i, r, "subject", "attribute", "template", "prompt")
        if r["subject"] not in r["prompt"]:
            raise DataError(f"{path}: record {i}: subject {r['subject']!r} is not in prompt {r['prompt']!r}")
        facts.append(KnownFact(int(r.get("known_id", i)), r["subject"], r["attribute"], r["template"], r["prompt"],
                               r.get("prediction", ""), r.get("relation_id", "")))
    log.info("loaded %d known facts from %s", len(facts), path)
    return facts


def _listed(value) -> tuple[str, ...]:
    return tuple(value) if isinstance(value, list) else (value,) if value else ()


def _flat_counterfact(path: Path, i: int, r: dict) -> CounterFactRecord:
    _need(path, i, r, "prompt", "subject", "target_new", "ground_truth")
    if r["subject"] not in r["prompt"]:
        raise DataError(f"{path}: record {i}: subject {r['subject']!r} is not in prompt {r['prompt']!r}")
    head, _, tail = r["prompt"].partition(r["subject"])  # the first occurrence, as ROME's templates have one
    template = head.replace("{", "{{").replace("}", "}}") + "{}" + tail.replace("{", "{{").replace("}", "}}")
    return CounterFactRecord(
        case_id=int(r.get("case_id", i)), subject=r["subject"], template=template,
        target_new=r["target_new"], target_true=r["ground_truth"],
        paraphrase_prompts=_listed(r.get("rephrase_prompt")), neighborhood_prompts=_listed(r.get("locality_prompt")),
        relation_id=r.get("relation_id", ""),
    )


def _nested_counterfact(path: Path, i: int, r: dict) -> CounterFactRecord:
    rw = r["requested_rewrite"]
    _need(path, i, rw, "prompt", "subject", "target_new", "target_true")
    if "{}" not in rw["prompt"]:
        raise DataError(f"{path}: record {i}: rewrite prompt {rw['prompt']!r} has no '{{}}'")
    return CounterFactRecord(
        case_id=int(r.get("case_id", i)), subject=rw["subject"], template=rw["prompt"],
        target_new=rw["target_new"]["str"], target_true=rw["target_true"]["str"],
        paraphrase_prompts=tuple(r.get("paraphrase_prompts", ())),
        neighborhood_prompts=tuple(r.get("neighborhood_prompts", ())),
        generation_prompts=tuple(r.get("generation_prompts", ())), relation_id=rw.get("relation_id", ""),
    )


def load_counterfact(path: str | Path, limit: int | None = None) -> list[CounterFactRecord]:
    """Load CounterFact, flattened (EasyEdit: prompt, subject, target_new, ground_truth, ...) or nested (ROME)."""
    path = Path(path)
    records = []
    for i, r in enumerate(_take(read_records(path), limit)):
        parse = _nested_counterfact if "requested_rewrite" in r else _flat_counterfact
        records.append(parse(path, i, r))
    log.info("loaded %d CounterFact records from %s", len(records), path)
    return records


def load_ioi(path: str | Path, limit: int | None = None) -> list[IOIPrompt]:
    """Load IOI prompts (case_id, prompt, answer; other columns are kept in ``flags``)."""
    path = Path(path)
    prompts = []
    for i, r in enumerate(_take(read_records(path), limit)):
        _need(path, i, r, "prompt", "answer")
        if not r["prompt"].strip():
            raise DataError(f"{path}: record {i} has an empty prompt")
        flags = {k: v for k, v in r.items() if k not in ("case_id", "prompt", "answer")}
        prompts.append(IOIPrompt(int(r.get("case_id", i)), r["prompt"], r["answer"], flags))
    log.info("loaded %d IOI prompts from %s", len(prompts), path)
    return prompts
