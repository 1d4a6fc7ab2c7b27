"""Autointerp: scoring against known units, the local simulator's one-pass read, the HTTP backend against a stub
(retries, timeout, cache, budget, malformed answers, unreachable), disjoint excerpts, a resumable run, FastICA."""

import json

import pytest
import torch

import lmscope
from lmscope.methods.autointerp import (
    HttpBackend,
    LocalBackend,
    SampleConfig,
    ScoreConfig,
    auroc,
    autointerp,
    bootstrap_ci,
    correlation,
    fast_ica,
    score_unit,
)
from lmscope.methods.autointerp import run as run_module
from lmscope.methods.sae import SaeConfig, build_sae


class Keyword:
    """A fake explainer / simulator that understands one kind of explanation: 'the word X'."""

    max_value = 10

    def __init__(self, explanation):
        self.explanation = explanation

    def explain(self, prompt):
        return self.explanation

    def simulate(self, explanation, tokens):
        word = explanation.split()[-1]
        return [10.0 if t.strip() == word else 0.0 for t in tokens]

    def detect(self, explanation, text):
        return 1.0 if explanation.split()[-1] in text.split() else 0.0


def excerpts_firing_on(word, n=5):
    def excerpt(i, fires):
        tokens = [f" w{i}", " the", f" {word}" if fires else " a", " city"]
        return tokens, torch.tensor([0.0, 0.0, 3.0 if fires else 0.0, 0.0])
    return {"explain": [excerpt(i, True) for i in range(n)], "top": [excerpt(i, True) for i in range(n, 2 * n)],
            "random": [excerpt(i, False) for i in range(n)]}


def test_a_matching_explanation_scores_high_and_a_wrong_one_low():
    cfg = ScoreConfig()
    ex = excerpts_firing_on("Paris")
    right = score_unit(Keyword("the word Paris"), Keyword("the word Paris"), ex, cfg)
    wrong = score_unit(Keyword("the word Tower"), Keyword("the word Tower"), ex, cfg)
    assert right["score"] == pytest.approx(1.0) and right["detection"] == 1.0
    assert wrong["score"] is None or wrong["score"] < 0.1  # a constant simulation has no correlation
    assert wrong["detection"] == 0.5
    assert correlation([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0) and auroc([1, 2], [0]) == 1.0
    lo, hi = bootstrap_ci([0.1, 0.2, 0.3, 0.4, 0.5])
    assert lo < 0.3 < hi


def test_local_simulator_reads_expected_values_in_one_forward_pass(lm, monkeypatch):
    backend = LocalBackend(lm)
    assert backend.max_value == 10
    calls = []
    real = lm.model.forward
    monkeypatch.setattr(lm.model, "forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    values = backend.simulate("the word Paris", [" The", " Paris", " is"])
    assert len(calls) == 1 and len(values) == 3 and all(0 <= v <= 10 for v in values)
    p = backend.detect("the word Paris", "The Paris")
    assert 0 < p < 1 and isinstance(backend.explain("Neuron 1 finds"), str)


def test_http_backend_retries_caches_budget_timeout_malformed(stub, tmp_path):
    make = lambda **kw: HttpBackend(stub.url, "stub-model", tmp_path / "cache", backoff=0.01, **kw)  # noqa: E731
    backend = make(retries=3)
    stub.script = ["500", "500"]
    assert backend.explain("prompt one") == "Paris" and len(stub.requests) == 3 and backend.sent == 3
    assert make().explain("prompt one") == "Paris" and len(stub.requests) == 3  # cached: a rerun costs nothing
    stub.answer = lambda messages: "a\t1\nb\t7"
    assert make().simulate("x", ["a", "b"]) == [1.0, 7.0]
    bad = make()
    assert bad.simulate("y", ["a", "b", "c"]) is None and bad.malformed == 1  # counted, not a crash
    stub.answer = lambda messages: "maybe"
    assert bad.detect("x", "text") is None and bad.malformed == 2
    with pytest.raises(lmscope.EndpointError, match="budget"):
        capped = make(budget=1)
        capped.explain("new 1")
        capped.explain("new 2")
    stub.script = ["sleep"] * 2
    with pytest.raises(lmscope.EndpointError, match="2 tries.*rerun"):
        make(timeout=0.2, retries=1).explain("slow")
    with pytest.raises(lmscope.EndpointError, match="failed after"):
        HttpBackend("http://127.0.0.1:9/v1", "m", tmp_path / "c2", retries=0).explain("unreachable")


def test_run_units_disjoint_excerpts_resume_and_errors(lm, corpus, tmp_path, monkeypatch):
    sae = build_sae(SaeConfig("topk", d_in=lm.d_model, ratio=2, k=4), seed=0)
    site = lmscope.Site(1, "resid_post")
    cfg = SampleConfig(n_units=3, corpus=corpus, split="all", tokens=2048, seq_len=16, batch_size=8, fit_tokens=512,
                       explain_examples=2, score_top=2, score_random=2)
    fake = Keyword("the word Paris")
    whole = autointerp(lm, site, cfg, ScoreConfig(), fake, fake, tmp_path / "whole", sae=sae)
    assert [r["kind"] for r in whole.records] == [k for k in cfg.kinds for _ in range(3)]
    for r in whole.records:
        rows = r.get("rows")
        if rows:
            assert not set(rows["explain"]) & (set(rows["score_top"]) | set(rows["score_random"]))
            assert len(rows["explain"]) == 2 and len(rows["score_random"]) == 2
    summary = whole.summary()
    assert set(summary["kinds"]) == set(cfg.kinds) and summary["kinds"]["sae"]["units"] == 3
    real, calls = run_module.score_unit, []

    def dies(*args, **kwargs):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "score_unit", dies)
    with pytest.raises(KeyboardInterrupt):
        autointerp(lm, site, cfg, ScoreConfig(), fake, fake, tmp_path / "killed", sae=sae)
    monkeypatch.setattr(run_module, "score_unit", real)
    resumed = autointerp(lm, site, cfg, ScoreConfig(), fake, fake, tmp_path / "killed", sae=sae)
    assert resumed.records == whole.records
    back = lmscope.load_result(whole.save(tmp_path / "r"))
    assert back.summary() == json.loads(json.dumps(summary))
    with pytest.raises(lmscope.InputError, match="out of range"):
        autointerp(lm, site, SampleConfig(kinds=("sae",), units=(64,), corpus=corpus, split="all", tokens=512,
                                          fit_tokens=256), ScoreConfig(), fake, fake, tmp_path / "bad", sae=sae)
    with pytest.raises(lmscope.ConfigError, match="needs an SAE"):
        autointerp(lm, site, SampleConfig(kinds=("sae",)), ScoreConfig(), fake, fake, tmp_path / "nosae")


def test_fast_ica_unmixes_independent_sources():
    gen = torch.Generator().manual_seed(0)
    sources = torch.distributions.Laplace(0.0, 1.0).sample((4000, 3))
    mixing = torch.randn(3, 6, generator=gen)
    w = fast_ica(sources @ mixing, 3, gen)
    recovered = (sources @ mixing - (sources @ mixing).mean(0)) @ w.T
    corr = torch.corrcoef(torch.cat([recovered, sources], 1).T)[:3, 3:].abs()
    assert torch.all(corr.max(1).values > 0.95)


def test_quantile_excerpts_come_from_each_bin_and_stay_disjoint():
    from lmscope.methods.autointerp.sampling import split_examples

    row_max = torch.cat([torch.arange(1, 31).float(), torch.zeros(20)])  # 30 active excerpts, 20 silent
    cfg = SampleConfig(explain_examples=3, score_top=3, score_random=4, score_quantiles=3)
    split = split_examples(row_max, cfg, torch.Generator().manual_seed(0))
    assert split.explain == [29, 27, 25] and split.score_top == [28, 26, 24]
    assert len(split.score_quantile) == 3 and all(row_max[r] > 0 for r in split.score_quantile)
    bins = sorted(int(row_max[r]) for r in split.score_quantile)
    assert bins[0] <= 8 and 9 <= bins[1] <= 16 and bins[2] >= 17  # one per third of the (unused) active excerpts
    groups = [set(split.explain), set(split.score_top), set(split.score_quantile), set(split.score_random)]
    assert sum(len(g) for g in groups) == len(set().union(*groups))  # pairwise disjoint
