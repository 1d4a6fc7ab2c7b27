"""Dataset mode of causal tracing: token groups, filtering, incremental records, resume after a kill."""

import json

import pytest
import torch

import lmscope
from lmscope.data.facts import KnownFact
from lmscope.methods.trace import TraceConfig, TraceDatasetResult, token_groups, trace_dataset
from lmscope.methods.trace import dataset as td
from tests.helpers import tiny_lm


@pytest.fixture(autouse=True)
def private_store(store_dir):
    return store_dir


def tiny():
    return tiny_lm(sharp=True)


FACTS = [KnownFact(i, s, a, "{}", p, "", "P0") for i, (s, a, p) in enumerate([
    ("Eiffel Tower", "Paris", "The Eiffel Tower is located in the city of"),
    ("France", "Paris", "The capital of France is"),
    ("Paris", "France", "Paris is the capital of"),
    ("w5 w6 w7", "city", "w5 w6 w7 is located in the"),
    ("Tower", "a", "The Tower is in the city of"),
])]
CONFIG = TraceConfig(samples=2, window=2, noise=1.5, kinds=("hidden", "mlp"))


def test_token_groups():
    assert token_groups((1, 4), 8) == [[1], [2], [3], [4], [5, 6], [7]]
    assert token_groups((0, 1), 3) == [[0], [], [0], [1], [], [2]]
    assert token_groups((2, 4), 5) == [[2], [], [3], [], [], [4]]


def test_resume_after_kill_gives_the_same_numbers(tmp_path, monkeypatch):
    lm = tiny()
    full = trace_dataset(lm, FACTS, tmp_path / "full", CONFIG, only_predicted=False)
    assert full.n_kept == 5 and full.aie["hidden"].shape == (6, lm.n_layers)

    real, calls = td.causal_trace, []

    def dies_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(td, "causal_trace", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        trace_dataset(lm, FACTS, tmp_path / "killed", CONFIG, only_predicted=False)
    records = tmp_path / "killed" / "records.jsonl"
    assert len(records.read_text().splitlines()) == 2
    with records.open("a") as f:
        f.write('{"known_id": 2, "kept": tr')  # a torn line, as if killed mid-write
    monkeypatch.setattr(td, "causal_trace", real)
    resumed = trace_dataset(lm, FACTS, tmp_path / "killed", CONFIG, only_predicted=False)
    assert len(records.read_text().splitlines()) == 5
    for kind in full.aie:
        assert torch.equal(resumed.aie[kind], full.aie[kind])
    assert resumed.ate == full.ate and resumed.group_counts == full.group_counts
    back = TraceDatasetResult.load(tmp_path / "killed" / "result")
    assert torch.equal(back.aie["mlp"], full.aie["mlp"]) and back.peak("hidden") == full.peak("hidden")


def test_only_predicted_facts_are_traced(tmp_path):
    lm = tiny()
    top = lm.to_str_tokens([int(lm(lm.tokenize(FACTS[1].prompt)["input_ids"])[0, -1].argmax())])[0]
    facts = [KnownFact(1, "France", top.strip(), "{}", FACTS[1].prompt, "", ""), FACTS[4]]
    if FACTS[4].attribute == lm.to_str_tokens([int(lm(lm.tokenize(FACTS[4].prompt)["input_ids"])[0, -1].argmax())])[0]:
        pytest.fail("fixture assumption broken: the tiny model predicts FACTS[4]")
    result = trace_dataset(lm, facts, tmp_path / "run", CONFIG)
    assert (result.n_facts, result.n_kept) == (2, 1)
    lines = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert [r["kept"] for r in lines] == [True, False]


def test_other_config_is_refused(tmp_path):
    lm = tiny()
    trace_dataset(lm, FACTS[:1], tmp_path / "run", CONFIG, only_predicted=False)
    with pytest.raises(lmscope.RunError, match="another model or configuration"):
        trace_dataset(lm, FACTS[:1], tmp_path / "run", TraceConfig(samples=3, noise=1.5), only_predicted=False)
    with pytest.raises(lmscope.RunError, match="another model or configuration"):
        trace_dataset(lmscope.LM(lm.model, lm.tokenizer, name="x"), FACTS[:1], tmp_path / "run", CONFIG)


def test_no_predicted_fact_is_an_error_and_leaves_nothing(tmp_path):
    lm = tiny()
    for f in FACTS[3:]:  # the fixture's assumption: the tiny model predicts neither
        assert not td.predicts(lm, f)[0]
    with pytest.raises(lmscope.DataError, match=r"predicts none of the 2 facts tried .*--all-facts"):
        trace_dataset(lm, FACTS[3:], tmp_path / "run", CONFIG)
    assert not (tmp_path / "run").exists()  # no run.json, no records, no result with "ate": NaN
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(lmscope.DataError, match="predicts none"):
        trace_dataset(lm, FACTS[3:], tmp_path / "mine", CONFIG)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]  # the user's folder and files stay


def test_all_facts_and_only_predicted_runs_do_not_share_a_folder(tmp_path):
    lm = tiny()
    top = td.predicts(lm, FACTS[1])[1]
    facts = [KnownFact(1, "France", top.strip(), "{}", FACTS[1].prompt, "", ""), FACTS[4]]
    trace_dataset(lm, facts, tmp_path / "run", CONFIG)  # ROME's protocol: FACTS[4] is recorded as skipped
    with pytest.raises(lmscope.RunError, match="another model or configuration"):
        trace_dataset(lm, facts, tmp_path / "run", CONFIG, only_predicted=False)  # would reuse the skip
