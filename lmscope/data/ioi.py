"""Indirect object identification (Wang et al. 2022) pairs from an IOI prompt file, for patching.

A record is ``{"prompt": "... Eleanor and Deanna ... Eleanor wanted to give a watermelon to", "answer": "Deanna"}``:
the indirect object (IO) is the answer, the subject (S) the other name, which appears twice. The corrupted prompt
replaces the second S (S2) by a third name C of the same token length, drawn with a seed from the file's names, so
the model has no repeated name to rule out ("ABC" corruption). The metric is logit(IO) - logit(S) at the last
position.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from lmscope.errors import DataError

NAME = re.compile(r"\b[A-Z][a-z]+\b")


@dataclass(frozen=True)
class IOIPair:
    """One clean / corrupted pair with the names and the token ids the metric reads."""

    case_id: int
    clean: str
    corrupted: str
    io: str  # indirect object (the answer)
    s: str  # subject (repeated in the clean prompt)
    c: str  # the third name that replaces S2
    io_id: int  # first token of " IO"
    s_id: int  # first token of " S"
    s2_position: int  # token position of S2 (C in the corrupted prompt)


def read_ioi(path: str | Path) -> list[dict]:
    """The records of an IOI prompt file (a JSON list of {"prompt", "answer", ...})."""
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read IOI prompts from {path}: {err}") from err
    if not isinstance(records, list) or not all(isinstance(r, dict) and {"prompt", "answer"} <= set(r)
                                                for r in records):
        raise DataError(f"{path}: expected a JSON list of records with 'prompt' and 'answer'")
    if not records:
        raise DataError(f"{path}: no IOI records")
    return records


def _names(record: dict) -> tuple[str, str] | None:
    """(IO, S) of a record, or None if its prompt does not have exactly one repeated other name."""
    io, counts = record["answer"].strip(), {}
    for name in NAME.findall(record["prompt"]):
        counts[name] = counts.get(name, 0) + 1
    repeated = [n for n, k in counts.items() if k >= 2 and n != io]
    return (io, repeated[0]) if len(repeated) == 1 and counts.get(io) == 1 else None


def _first_token(tokenizer, name: str) -> tuple[int, int]:
    ids = tokenizer(" " + name, add_special_tokens=False)["input_ids"]
    return ids[0], len(ids)


def ioi_pairs(tokenizer, records: list[dict], seed: int = 0, limit: int | None = None) -> list[IOIPair]:
    """Clean / corrupted pairs of equal token length (records whose names cannot be parsed are skipped)."""
    pool = sorted({n for r in records for n in (_names(r) or ())})
    rng = random.Random(seed)
    pairs = []
    for k, record in enumerate(records):
        names = _names(record)
        if names is None:
            continue
        pair = _pair(tokenizer, record, *names, pool, rng, record.get("case_id", k))
        if pair is not None:
            pairs.append(pair)
        if limit is not None and len(pairs) >= limit:
            break
    if not pairs:
        raise DataError("no IOI record gave a clean / corrupted pair of equal length")
    return pairs


def _pair(tokenizer, record: dict, io: str, s: str, pool: list[str], rng: random.Random, case_id: int):
    prompt = record["prompt"]
    s_len = _first_token(tokenizer, s)[1]
    choices = [n for n in pool if n not in (io, s) and _first_token(tokenizer, n)[1] == s_len]
    if not choices:
        return None
    c = rng.choice(choices)
    second = [m.start() for m in re.finditer(rf"\b{s}\b", prompt)][1]
    corrupted = prompt[:second] + c + prompt[second + len(s):]
    clean_ids = tokenizer(prompt)["input_ids"]
    corr_ids = tokenizer(corrupted)["input_ids"]
    if len(clean_ids) != len(corr_ids):
        return None
    diff = [i for i, (a, b) in enumerate(zip(clean_ids, corr_ids)) if a != b]
    return IOIPair(case_id=int(case_id), clean=prompt, corrupted=corrupted, io=io, s=s, c=c,
                   io_id=_first_token(tokenizer, io)[0], s_id=_first_token(tokenizer, s)[0],
                   s2_position=diff[0] if diff else -1)
