"""The dataset loaders on ../shared/data, their errors, and the packaged corpora."""

import json

import pytest

from lmscope.data import (
    DataError,
    iter_documents,
    load_counterfact,
    load_ioi,
    load_known_facts,
    token_batches,
)
from lmscope.data.corpus import in_split
from tests.helpers import tiny_tokenizer


def test_known_1000(shared_data):
    facts = load_known_facts(shared_data / "known_1000.json")
    assert len(facts) == 1209
    first = facts[0]
    assert (first.subject, first.attribute) == ("Vinson Massif", "Antarctica")
    assert first.prompt == "Vinson Massif is located in the continent of"
    assert all(f.subject in f.prompt and "{}" in f.template for f in facts)
    assert len(load_known_facts(shared_data / "known_1000.json", limit=5)) == 5


def test_counterfact_flattened(shared_data):
    records = load_counterfact(shared_data / "counterfact-edit.json", limit=200)
    assert len(records) == 200
    r = records[0]
    assert r.template == "The mother tongue of {} is" and r.subject == "Danielle Darrieux"
    assert (r.new, r.true) == (" English", " French")
    assert r.paraphrase_prompts == ("Where Danielle Darrieux is from, people speak the language of",)
    assert r.neighborhood_prompts == ("Michel Rocard is a native speaker of",)
    raw = json.loads((shared_data / "counterfact-edit.json").read_text())[:200]
    assert [x.prompt for x in records] == [x["prompt"] for x in raw]


def test_counterfact_nested_layout(tmp_path):
    case = {"case_id": 7, "requested_rewrite": {
        "prompt": "{} is located in", "subject": "Eiffel Tower", "relation_id": "P276",
        "target_new": {"str": "Rome", "id": "Q220"}, "target_true": {"str": "Paris", "id": "Q90"}},
        "paraphrase_prompts": ["a b. Eiffel Tower sits in"], "neighborhood_prompts": ["The Louvre is in"],
        "generation_prompts": ["Eiffel Tower is famous for"]}
    path = tmp_path / "counterfact.json"
    path.write_text(json.dumps([case]))
    (r,) = load_counterfact(path)
    assert (r.case_id, r.prompt, r.new, r.true, r.relation_id) == (7, "Eiffel Tower is located in", " Rome",
                                                                   " Paris", "P276")
    assert r.generation_prompts == ("Eiffel Tower is famous for",)


def test_counterfact_braces_survive(tmp_path):
    path = tmp_path / "cf.json"
    path.write_text(json.dumps([{"prompt": "In {set} X is", "subject": "X", "target_new": "a", "ground_truth": "b"}]))
    (r,) = load_counterfact(path)
    assert r.prompt == "In {set} X is"


def test_ioi(shared_data):
    prompts = load_ioi(shared_data / "ioi.json")
    assert len(prompts) == 841
    assert prompts[0].answer == "Deanna" and prompts[0].prompt.endswith("to")
    assert "Qwen/Qwen3-4B-Instruct-2507" in prompts[0].flags


@pytest.mark.parametrize("content, match", [
    (None, "no such file"),
    ("{not json", "not valid JSON"),
    ('{"a": 1}', "list of objects"),
    ('[{"subject": "X"}]', "lacks attribute, template, prompt"),
    ('[{"subject": "X", "attribute": "a", "template": "{} is", "prompt": "Y is"}]', "is not in prompt"),
])
def test_known_facts_errors(tmp_path, content, match):
    path = tmp_path / "known.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=match):
        load_known_facts(path)


def test_jsonl_and_negative_limit(tmp_path):
    path = tmp_path / "ioi.jsonl"
    path.write_text('{"prompt": "a b to", "answer": "b"}\n{"prompt": "c d to", "answer": "d"}\n')
    assert [p.answer for p in load_ioi(path)] == ["b", "d"]
    with pytest.raises(DataError, match="limit"):
        load_ioi(path, limit=-1)


def test_local_corpus_and_splits(tmp_path):
    (tmp_path / "c.txt").write_text("first doc here\n\nsecond doc\n\n\nthird")
    docs = list(iter_documents(tmp_path / "c.txt"))
    assert [d.text for d in docs] == ["first doc here", "second doc", "third"]
    ids = [f"doc{i}" for i in range(2000)]
    test = [i for i in ids if in_split(i, "test")]
    assert 150 < len(test) < 250 and not any(in_split(i, "train") for i in test)
    with pytest.raises(DataError, match="unknown corpus"):
        list(iter_documents(tmp_path / "missing"))
    with pytest.raises(DataError, match="split"):
        list(iter_documents("wiki", split="dev"))


def test_token_batches_pack_documents():
    tok = tiny_tokenizer()
    texts = ["a b c d e f g", "h i j k", "l m n o p q r s t u"]
    batches = list(token_batches(tok, texts, seq_len=5, batch_size=2))
    stream = [i for b in batches for row in b.tolist() for i in row]
    expected = []
    for t in texts:
        expected += tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert [b.shape[1] for b in batches] == [5] * len(batches)
    assert stream == expected[: len(stream)] and len(expected) - len(stream) < 5
    assert sum(b.shape[0] for b in token_batches(tok, texts, seq_len=5, batch_size=2, max_tokens=10)) == 2


@pytest.mark.parametrize("name, count", [("wiki", 10033), ("bbc", 2225)])
def test_packaged_corpora(name, count):
    docs = list(iter_documents(name))
    assert len(docs) == count and all(d.text for d in docs)
    assert len({d.doc_id for d in docs}) == count
    test = list(iter_documents(name, "test"))
    assert 0.07 * count < len(test) < 0.13 * count
