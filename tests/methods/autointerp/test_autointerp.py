"""Autointerp: scoring against known units, the local simulator's one-pass read, the HTTP backend against a stub
(retries, timeout, cache, budget, malformed answers, unreachable), disjoint excerpts, a resumable run, FastICA."""

import dataclasses
import functools
import json
from collections import Counter
from pathlib import Path

import pytest
import torch

import lmscope
from lmscope.methods.autointerp import (
    Backend,
    HttpBackend,
    LocalBackend,
    SampleConfig,
    ScoreConfig,
    auroc,
    autointerp,
    balanced_accuracy,
    bootstrap_ci,
    correlation,
    fast_ica,
    load_prompt,
    score_unit,
)
from lmscope.methods.autointerp import run as run_module
from lmscope.methods.sae import SaeConfig, build_sae


class Keyword(Backend):
    """A fake explainer / simulator that understands one kind of explanation: 'the word X'."""

    chat = False

    def __init__(self, explanation):
        self.explanation = explanation

    def explain(self, prompt):
        return self.explanation

    def simulate(self, explanation, tokens):
        word = explanation.split()[-1]
        return [10.0 if t.strip() == word else 0.0 for t in tokens]

    def detect(self, explanation, text):
        return 1.0 if explanation.split()[-1] in text.split() else 0.0

    def fuzz(self, explanation, text):
        return 1.0 if f"<<{explanation.split()[-1]}>>" in text else 0.0


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
    assert right["score"] == pytest.approx(1.0) and right["detection"] == 1.0 == right["detection_accuracy"]
    assert right["fuzzing"] == 1.0 == right["fuzzing_accuracy"]
    assert wrong["score"] is None or wrong["score"] < 0.1  # a constant simulation has no correlation
    assert wrong["detection"] == 0.5 == wrong["detection_accuracy"] == wrong["fuzzing"]
    assert balanced_accuracy([0.9, 0.2], [0.1, 0.6]) == 0.5 and balanced_accuracy([], [0.1]) != 0.5
    assert correlation([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0) and auroc([1, 2], [0]) == 1.0
    lo, hi = bootstrap_ci([0.1, 0.2, 0.3, 0.4, 0.5])
    assert lo < 0.3 < hi


def test_local_simulator_reads_expected_values_after_one_shared_prefix(lm, monkeypatch):
    backend = LocalBackend(lm)
    assert backend.max_value == 10
    assert backend.runs_on.startswith(f"{lm.name}, float32, on ") and "thread" in backend.runs_on
    excerpts = [[" The", " Paris", " is"], [" a", " city"], [" the", " Eiffel", " Tower", " is"]]
    backend.simulate("warm", ["x"])  # probes the model's KV cache once
    calls, real = [], lm.model.forward
    monkeypatch.setattr(lm.model, "forward", functools.wraps(real)(lambda *a, **k: calls.append(1) or real(*a, **k)))
    many = backend.simulate_many("the word Paris", excerpts)
    assert len(calls) == 2  # the instructions once, then every excerpt in one batch
    monkeypatch.undo()
    head = load_prompt("simulator.txt").format(explanation="the word Paris", max_value=10)
    for tokens, values in zip(excerpts, many):  # Bills et al.'s all-at-once read of the whole prompt, by hand
        ids, where = list(lm.tokenizer(head)["input_ids"]), []
        for t in tokens:
            ids += lm.tokenizer(t, add_special_tokens=False)["input_ids"] + backend.tab
            where.append(len(ids) - 1)
            ids += backend.unknown + backend.newline
        probs = torch.softmax(lm(torch.tensor([ids]))[0, where][:, backend.value_ids].float(), -1)
        assert values == pytest.approx((probs @ torch.arange(11.0)).tolist(), abs=1e-5)
    p = backend.detect("the word Paris", "The Paris")  # quote: P(a word of the text) against P(None), first token
    whole = lm(backend.as_chat(load_prompt("detector_quote.txt").format(explanation="the word Paris",
                                                                        text="The Paris")))
    probs = torch.softmax(whole[0, -1].detach().float(), -1)
    first = {lm.tokenizer(f, add_special_tokens=False)["input_ids"][0]
             for w in ("The", "Paris") for v in (w, w.lower(), w.upper()) for f in (v, " " + v)} - {backend.none}
    assert backend.quotable(["The", "Paris"]) == sorted(first)
    quote = float(probs[sorted(first)].sum())
    assert p == pytest.approx(quote / (quote + float(probs[backend.none])), abs=1e-5)
    assert backend.detect_many("the word Paris", ["The Paris", "a city"])[0] == pytest.approx(p, abs=1e-6)
    fuzz = backend.fuzz("the word Paris", "The <<Paris>> is")  # fuzzing: only the marked words count
    whole = lm(backend.as_chat(load_prompt("fuzzer_quote.txt").format(explanation="the word Paris",
                                                                      text="The <<Paris>> is")))
    probs = torch.softmax(whole[0, -1].detach().float(), -1)
    quote = float(probs[backend.quotable(["Paris"])].sum())
    assert fuzz == pytest.approx(quote / (quote + float(probs[backend.none])), abs=1e-5)
    assert backend.none not in backend.quotable(["None"])  # "None" is never a quote
    yes_no = LocalBackend(lm, judge="yes-no")
    whole = lm(backend.as_chat(load_prompt("detector.txt").format(explanation="the word Paris", text="The Paris")))
    assert yes_no.detect("the word Paris", "The Paris") == pytest.approx(
        float(torch.softmax(whole[0, -1, backend.yes_no].detach(), -1)[0]), abs=1e-5)
    with pytest.raises(lmscope.ConfigError, match="judge"):
        LocalBackend(lm, judge="maybe")
    assert 0 < backend.fuzz("the word Paris", "The <<Paris>>") < 1
    assert isinstance(backend.explain("Neuron 1 finds"), str)
    used = {static: head for static, head in backend._heads.items() if head.cache is not None}
    assert len(used) == 1  # the simulator's instructions, run once and reused (no chat: the judges' start is "Text")
    assert "Neuron 1 again, correctly this time" in next(iter(used))  # the one-shot example is in it


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
    planted = [r for r in whole.records if r["kind"] == "planted"]
    assert [r["kind"] for r in whole.records if r["kind"] != "planted"] == [k for k in cfg.kinds[:-1] for _ in range(3)]
    assert [r["label"] for r in planted] == ["capital cities", "digits", "the word 'the'", "country names"]
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
    written = [json.loads(line)["kind"] for line in (tmp_path / "killed" / "records.jsonl").read_text().splitlines()]
    assert written == list(cfg.kinds)  # scored in turn across kinds: six records, one of each, before the kill
    assert (tmp_path / "killed" / run_module.EXCERPTS).is_file()  # saved at the first start
    monkeypatch.setattr(run_module, "collect", lambda *a: pytest.fail("a resumed run reads its saved excerpts"))
    resumed = autointerp(lm, site, cfg, ScoreConfig(), fake, fake, tmp_path / "killed", sae=sae)

    def untimed(records):  # wall times differ between runs; everything else is the same
        return [{k: v for k, v in r.items() if k not in ("seconds", "finished")} for r in records]
    assert untimed(resumed.records) == untimed(whole.records)
    monkeypatch.undo()
    other = build_sae(SaeConfig("topk", d_in=lm.d_model, ratio=2, k=4), seed=1)
    with pytest.raises(lmscope.RunError, match="other units"):  # another SAE's features fire elsewhere
        autointerp(lm, site, cfg, ScoreConfig(), fake, fake, tmp_path / "killed", sae=other)
    fixed = dataclasses.replace(cfg, kinds=("sae",), units=(0, 1, 2))
    autointerp(lm, site, fixed, ScoreConfig(), fake, fake, tmp_path / "fixed", sae=sae)
    with pytest.raises(lmscope.RunError, match="other activations of the sae units"):  # the same ids, other weights
        autointerp(lm, site, fixed, ScoreConfig(), fake, fake, tmp_path / "fixed", sae=other)
    (tmp_path / "binary").mkdir()
    (tmp_path / "binary" / "run.json").write_bytes((tmp_path / "fixed" / "run.json").read_bytes())
    (tmp_path / "binary" / run_module.EXCERPTS).write_bytes(bytes(range(256)) * 8)  # a corrupt excerpts file
    with pytest.raises(lmscope.ArtifactError, match="not a valid safetensors file"):
        autointerp(lm, site, fixed, ScoreConfig(), fake, fake, tmp_path / "binary", sae=sae)
    Path(corpus).write_text("Other text entirely. " * 400)
    with pytest.raises(lmscope.RunError, match="other text"):
        autointerp(lm, site, fixed, ScoreConfig(), fake, fake, tmp_path / "fixed", sae=sae)
    back = lmscope.load_result(whole.save(tmp_path / "r"))
    assert back.summary() == json.loads(json.dumps(summary))
    timed = [r for r in whole.records if r.get("seconds")]
    assert timed and all(set(r["seconds"]) == {"explain", "simulation", "detection", "fuzzing"} for r in timed)
    assert all(r["scored_on"] == "" for r in timed)  # the fake backend does not say where it runs
    timing = summary["timing"]
    assert timing["units"] == len(timed) and timing["scored_on"] == {"": len(timed)}
    assert timing["seconds_per_unit"] == pytest.approx(sum(timing["stages"].values()))
    assert timing["units_per_hour"] == pytest.approx(3600 / timing["seconds_per_unit"])
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
    assert split.random_pool == "quiet" and all(row_max[r] < 0.25 * 30 for r in split.score_random)


def test_random_excerpts_are_quiet_when_the_unit_has_enough_and_uniform_when_not():
    from lmscope.methods.autointerp.sampling import split_examples

    sparse = torch.cat([torch.full((10,), 5.0), torch.full((30,), 0.5), torch.zeros(10)])  # 40 quiet (< 1.25)
    dense = torch.linspace(2.0, 10.0, 50)  # every excerpt is above a quarter of the peak
    cfg = SampleConfig(explain_examples=2, score_top=2, score_random=8, score_quantiles=0)
    quiet = split_examples(sparse, cfg, torch.Generator().manual_seed(0))
    assert quiet.random_pool == "quiet" and all(sparse[r] < 1.25 for r in quiet.score_random)
    uniform = split_examples(dense, cfg, torch.Generator().manual_seed(0))
    assert uniform.random_pool == "any" and len(uniform.score_random) == 8
    always = split_examples(sparse, SampleConfig(explain_examples=2, score_top=2, score_random=8, score_quantiles=0,
                                                 quiet_below=0.0), torch.Generator().manual_seed(0))
    assert always.random_pool == "any"


def _chat(content) -> dict:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


@pytest.mark.parametrize("body, shown", [
    ({"choices": []}, '{"choices": []}'),
    ([], "[]"),
    (_chat(None), '"content": null'),
    ({"choices": [{"message": {"role": "assistant"}}]}, '"role": "assistant"'),
    ({"choices": [{"text": "Paris"}]}, '"text": "Paris"'),
    ({"error": {"message": "model overloaded"}}, "model overloaded"),
    ("<html>502 Bad Gateway</html>", "<html>502 Bad Gateway</html>"),
    ({"choices": [], "detail": "y" * 5000}, '{"choices": [], "detail": "yyyy'),  # shortened
])
def test_wrong_shape_answers_are_errors_that_show_them_and_are_never_cached(body, shown, stub, tmp_path):
    backend = HttpBackend(stub.url, "stub-model", tmp_path / "cache", backoff=0.01, retries=3)
    stub.script = [{"body": body}]
    with pytest.raises(lmscope.EndpointError) as err:
        backend.explain("prompt")
    message = str(err.value)
    assert shown in message and "\n" not in message and len(message) < 600, message
    assert len(stub.requests) == 1  # an answer that is not a chat completion is not retried
    assert not list((tmp_path / "cache").iterdir())  # and never cached
    assert HttpBackend(stub.url, "stub-model", tmp_path / "cache").explain("prompt") == "Paris"  # a healthy rerun


def test_a_cached_answer_that_fails_validation_is_discarded_and_asked_again(stub, tmp_path):
    backend = HttpBackend(stub.url, "stub-model", tmp_path / "cache", backoff=0.01)
    assert backend.explain("prompt") == "Paris" and len(stub.requests) == 1
    [path] = (tmp_path / "cache").iterdir()
    for bad in ('{"request": {}, "content": null}', "[]", "{not json", ""):
        path.write_text(bad)
        stub.answer = lambda messages: "Tower"
        again = HttpBackend(stub.url, "stub-model", tmp_path / "cache", backoff=0.01)
        assert again.explain("prompt") == "Tower" and again.sent == 1, bad  # re-asked, not replayed
        assert json.loads(path.read_text())["content"] == "Tower"
        assert HttpBackend(stub.url, "stub-model", tmp_path / "cache").explain("prompt") == "Tower"  # cached again
        stub.answer = lambda messages: "Paris"


def test_a_client_error_is_reported_after_one_request_and_server_errors_are_retried(stub, tmp_path):
    make = lambda **kw: HttpBackend(stub.url, "stub-model", tmp_path / "cache", backoff=0.01, **kw)  # noqa: E731
    stub.script = [{"status": 400, "body": {"error": {"message": "max_tokens is too large: 99999"}}}]
    with pytest.raises(lmscope.EndpointError) as err:
        make(retries=3).explain("prompt")
    message = str(err.value)
    assert "HTTP 400" in message and "max_tokens is too large" in message and "tries" not in message, message
    assert len(stub.requests) == 1
    stub.script = [{"status": 404, "body": "no such route"}]
    with pytest.raises(lmscope.EndpointError, match="HTTP 404.*no such route"):
        make(retries=3).explain("prompt")
    assert len(stub.requests) == 2
    stub.script = [{"status": 429, "body": {"error": {"message": "slow down"}}}, "500"]
    assert make(retries=3).explain("prompt") == "Paris" and len(stub.requests) == 5  # 429 and 5xx: retried
    stub.script = [{"status": 503, "body": "busy"}] * 2
    with pytest.raises(lmscope.EndpointError, match=r"failed after 2 tries \(HTTP 503.*busy"):
        make(retries=1).explain("other prompt")


def test_prompt_folders_and_templates_are_checked(lm, stub, tmp_path):
    from lmscope.methods.autointerp import check_prompts, load_prompt

    with pytest.raises(lmscope.ConfigError, match="prompts folder .*nowhere.* does not exist"):
        check_prompts(tmp_path / "nowhere")
    with pytest.raises(lmscope.ConfigError, match="does not exist"):
        LocalBackend(lm, prompts=tmp_path / "nowhere")
    with pytest.raises(lmscope.ConfigError, match="does not exist"):
        HttpBackend(stub.url, "m", tmp_path / "cache", prompts=tmp_path / "nowhere")
    with pytest.raises(lmscope.ConfigError, match="does not exist"):
        load_prompt("detector.txt", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(lmscope.ConfigError, match="none of"):
        check_prompts(tmp_path / "empty")
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "detector.txt").write_text("Does {explanation} fire in {text}? {oops}")
    with pytest.raises(lmscope.ConfigError, match=r"detector.txt.*\{oops\}.*explanation, text"):
        check_prompts(folder)
    with pytest.raises(lmscope.ConfigError, match=r"\{oops\}"):
        load_prompt("detector.txt", folder)
    for text, fragment in [("Does {explanation fire", "detector.txt"), ("{explanation} {0}", "{0}"),
                           ("{explanation.__class__} {text}", "explanation.__class__"),
                           ("Does it fire in {text}?", "{explanation}")]:
        (folder / "detector.txt").write_text(text)
        with pytest.raises(lmscope.ConfigError, match="detector.txt") as err:
            check_prompts(folder)
        assert fragment in str(err.value), str(err.value)
    (folder / "detector.txt").write_text("Does {explanation} fire in {text}? {{literal}} {max_value}")
    with pytest.raises(lmscope.ConfigError, match="max_value"):
        check_prompts(folder)  # the detector is not given max_value
    (folder / "detector.txt").write_text("Does {explanation} fire in {text}? {{literal braces}}")
    check_prompts(folder)
    assert load_prompt("detector.txt", folder).startswith("Does {explanation}")
    assert LocalBackend(lm, prompts=folder).detect("the word Paris", "The Paris") is not None


class NotFinite(Keyword):
    """A simulator whose model gives NaN (or infinite) values."""

    def __init__(self, explanation, value=float("nan"), where="simulate"):
        super().__init__(explanation)
        self.value, self.where = value, where

    def simulate(self, explanation, tokens):
        values = super().simulate(explanation, tokens)
        return [self.value, *values[1:]] if self.where == "simulate" else values

    def detect(self, explanation, text):
        return self.value if self.where == "detect" else super().detect(explanation, text)


@pytest.mark.parametrize("value, where", [(float("nan"), "simulate"), (float("inf"), "simulate"),
                                          (float("nan"), "detect")])
def test_a_non_finite_simulation_is_an_error_naming_the_unit(value, where):
    fake = Keyword("the word Paris")
    with pytest.raises(lmscope.LmscopeError, match=r"sae:17.*not finite") as err:
        score_unit(fake, NotFinite("the word Paris", value, where), excerpts_firing_on("Paris"), ScoreConfig(),
                   unit="sae:17")
    assert "\n" not in str(err.value)


def test_non_finite_activations_are_an_error_naming_the_unit():
    ex = excerpts_firing_on("Paris")
    ex["top"][0] = (ex["top"][0][0], torch.tensor([0.0, float("inf"), 3.0, 0.0]))
    fake = Keyword("the word Paris")
    with pytest.raises(lmscope.LmscopeError, match=r"pca:3.*not finite"):
        score_unit(fake, fake, ex, ScoreConfig(), unit="pca:3")


def test_a_summary_over_no_scored_unit_has_no_nan(lm, corpus, tmp_path):
    class Mute(Keyword):
        def simulate(self, explanation, tokens):
            return None  # an answer that cannot be read (counted)

        def detect(self, explanation, text):
            return None

    cfg = SampleConfig(kinds=("pca",), n_units=2, corpus=corpus, split="all", tokens=512, seq_len=16, batch_size=8,
                       fit_tokens=256)
    result = autointerp(lm, lmscope.Site(1, "resid_post"), cfg, ScoreConfig(), Mute("x"), Mute("x"), tmp_path / "m")
    pca = result.summary()["kinds"]["pca"]
    assert pca["scored"] == 0 and pca["mean_score"] is None and pca["ci95"] == [None, None]
    assert pca["mean_detection"] is None and pca["malformed"] > 0
    assert "NaN" not in json.dumps(result.summary())


class Silent(Keyword):
    """A simulator that always predicts 0 (so no unit gets a score) and never detects."""

    def simulate(self, explanation, tokens):
        return [0.0] * len(tokens)

    def detect(self, explanation, text):
        return 0.0


def small(corpus, **kw) -> SampleConfig:
    return SampleConfig(**{**dict(kinds=("ica",), n_units=2, corpus=corpus, split="all", tokens=512, seq_len=16,
                                  batch_size=8, fit_tokens=256), **kw})


@pytest.mark.parametrize("kind", ["ica", "pca", "random"])
def test_more_directions_than_the_site_has_dimensions(kind, lm, corpus, tmp_path):
    fake = Silent("the word Paris")
    for n, fit in ((40, 256), (20, 16)):  # more than d_model = 32; more than the 15 fit activations
        result = autointerp(lm, lmscope.Site(1, "resid_post"), small(corpus, kinds=(kind,), n_units=n, fit_tokens=fit),
                            ScoreConfig(), fake, fake, tmp_path / f"{kind}{n}")
        assert 1 <= len(result.records) <= n
        assert "NaN" not in json.dumps(result.summary())


def test_baseline_kinds_take_their_own_number_of_units(lm, corpus, tmp_path):
    fake = Silent("the word Paris")
    cfg = small(corpus, kinds=("neurons", "random", "pca", "ica"), n_units=3, n_baseline_units=2)
    result = autointerp(lm, lmscope.Site(1, "resid_post"), cfg, ScoreConfig(), fake, fake, tmp_path / "b")
    count = Counter(r["kind"] for r in result.records)
    assert count == {"neurons": 3, "random": 2, "pca": 2, "ica": 2}
    with pytest.raises(lmscope.ConfigError, match="n-baseline-units must be a number >= 0"):
        small(corpus, n_baseline_units=-1)


def test_an_empty_corpus_is_one_clear_error(lm, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    fake = Silent("x")
    with pytest.raises(lmscope.LmscopeError, match="empty.txt"):
        autointerp(lm, lmscope.Site(1, "resid_post"), small(str(tmp_path / "empty.txt")), ScoreConfig(), fake, fake,
                   tmp_path / "out")


def test_an_sae_with_a_nan_weight_is_an_error_naming_the_feature(lm, corpus, tmp_path):
    sae = build_sae(SaeConfig("topk", d_in=lm.d_model, ratio=2, k=4), seed=0)
    with torch.no_grad():
        sae.W_enc[:, 5] = float("nan")  # feature 5 reads NaN from every activation
    fake = Silent("x")
    with pytest.raises(lmscope.LmscopeError, match=r"SAE feature 5\b.*not finite"):
        autointerp(lm, lmscope.Site(1, "resid_post"), small(corpus, kinds=("sae",)), ScoreConfig(), fake, fake,
                   tmp_path / "out", sae=sae)


def test_activations_beyond_float16_are_kept_not_turned_into_infinity(lm, corpus):
    from lmscope.methods.autointerp.sampling import collect
    from lmscope.model.units import projections

    site = lm.check(lmscope.Site(1, "resid_post"))
    readout = torch.zeros(2, lm.d_model)
    readout[0, 0], readout[1, 1] = 1e7, 1.0  # unit 0 reads far beyond float16's 65504
    units = projections("pca", site, torch.zeros(lm.d_model), readout)
    data = collect(lm, [units], small(corpus, kinds=("pca",)))
    acts = data.acts["pca"]
    assert torch.isfinite(acts).all() and acts[..., 0].abs().max() > 1e5


def test_an_sae_whose_features_never_fire_is_an_error_not_a_missing_row(lm, corpus, tmp_path):
    sae = build_sae(SaeConfig("topk", d_in=lm.d_model, ratio=2, k=4), seed=0)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_enc.fill_(-1.0)
    fake = Silent("x")
    with pytest.raises(lmscope.InputError, match="none of the 64 SAE features .* fires"):
        autointerp(lm, lmscope.Site(1, "resid_post"), small(corpus, kinds=("sae", "pca")), ScoreConfig(), fake, fake,
                   tmp_path / "out", sae=sae)


def test_an_instruct_model_is_asked_through_its_chat_template(lm):
    from lmscope.errors import ConfigError
    from lmscope.methods.autointerp import LocalBackend

    prompt = "Look at the neuron.\nSummarize it.\nExplanation: the main thing this neuron does is find"
    plain = LocalBackend(lm)
    assert not plain.chat and plain.as_chat(prompt) == prompt  # no template: completion prompts as before
    with pytest.raises(ConfigError, match="no chat template"):
        LocalBackend(lm, chat="on")
    lm.tokenizer.chat_template = ("{% for m in messages %}<user>{{ m['content'] }}</user>{% endfor %}"
                                  "{% if add_generation_prompt %}<assistant>{% endif %}")
    try:
        chat = LocalBackend(lm)
        assert chat.chat and not LocalBackend(lm, chat="off").chat
        assert chat.as_chat(prompt) == ("<user>Look at the neuron.\nSummarize it.</user><assistant>"
                                        "Explanation: the main thing this neuron does is find")
        assert chat.as_chat("Text: x\nAnswer:") == "<user>Text: x</user><assistant>"  # the answer is the message
    finally:
        lm.tokenizer.chat_template = None


def _result(planted_detection, random_detection, explanations):
    records = []
    for kind, scores in (("planted", planted_detection), ("random", random_detection), ("sae", [0.7, 0.6, 0.8])):
        for unit, score in enumerate(scores):
            records.append({"kind": kind, "unit": unit, "explanation": explanations[unit % len(explanations)],
                            "score": score - 0.5, "detection": score, "detection_accuracy": score,
                            "fuzzing": score, "fuzzing_accuracy": score, "malformed": 0,
                            **({"label": f"set {unit}"} if kind == "planted" else {})})
    return run_module.AutointerpResult("m", {"sae": "resid_post.1"}, records, "e", "s")


def test_the_summary_and_report_judge_the_controls_and_show_a_degenerate_explainer():
    from lmscope.viz.autointerp import autointerp_report, controls_text, scores_figure

    good = _result([0.95, 0.9, 0.88], [0.45, 0.55, 0.5], ["cities", "digits", "months"])
    controls = good.summary()["controls"]
    assert controls["planted_ok"] and controls["random_ok"]
    assert controls["planted"]["detection"] == pytest.approx(0.91)
    page = autointerp_report(good).render()
    assert "at least 0.85" in page and "within 0.5 ± 0.1" in page and "Degenerate" not in page
    assert controls["planted_ci"][0] >= 0.85 and "Narrowly" not in page  # every bootstrap mean clears the bar
    near = _result([0.99, 0.95, 0.62], [0.45, 0.55, 0.5], ["cities"]).summary()["controls"]  # mean 0.853
    assert near["planted_ok"] and near["planted_ci"][0] < 0.85 and "Narrowly" in controls_text(near)
    assert "0 (set 0)" in page and good.summary()["kinds"]["sae"]["distinct"] == 3
    assert len(scores_figure(good).axes) == 3  # simulation, detection, fuzzing

    bad = _result([0.6, 0.7, 0.5], [0.8, 0.9, 0.7], ["the thing it's looking for."])
    controls = bad.summary()["controls"]
    assert controls["planted_ok"] is False and controls["random_ok"] is False
    page = autointerp_report(bad).render()
    assert "below 0.85" in page and "outside 0.5 ± 0.1" in page
    assert "Degenerate explainer" in page and bad.summary()["kinds"]["sae"]["most_common_share"] == 1.0
    without = run_module.AutointerpResult("m", {}, [r for r in good.records if r["kind"] == "sae"], "e", "s")
    assert without.summary()["controls"]["planted_ok"] is None
    assert "not run" in autointerp_report(without).render()


def test_the_summary_and_report_give_units_an_hour_and_where_they_were_scored():
    from lmscope.viz.autointerp import autointerp_report, timing_text

    result = _result([0.9, 0.9], [0.5, 0.5], ["cities"])
    for i, r in enumerate(result.records):
        r["seconds"] = {"explain": 2.0, "simulation": 10.0, "detection": 4.0, "fuzzing": 4.0 + 2 * (i % 2)}
        r["scored_on"] = "qwen, float32, on CPU A" if i < 4 else "qwen, bfloat16, on GPU B"
    result.records.append({**result.records[0], "unit": 9, "seconds": {}})  # never active: not timed
    timing = result.summary()["timing"]
    assert timing["units"] == 7 and timing["stages"]["fuzzing"] == pytest.approx(34 / 7)
    assert timing["seconds_per_unit"] == pytest.approx(16 + 34 / 7)
    assert timing["units_per_hour_without_simulation"] == pytest.approx(3600 / (6 + 34 / 7))
    assert timing["scored_on"] == {"qwen, float32, on CPU A": 4, "qwen, bfloat16, on GPU B": 3}
    cpu, gpu = timing["by_machine"]["qwen, float32, on CPU A"], timing["by_machine"]["qwen, bfloat16, on GPU B"]
    assert cpu["units"] == 4 and cpu["seconds_per_unit"] == pytest.approx(16 + 5)  # units 0-3: fuzzing 4, 6, 4, 6
    assert gpu["seconds_per_unit"] == pytest.approx(16 + 14 / 3) and gpu["units_per_hour"] == pytest.approx(
        3600 / (16 + 14 / 3))
    text = timing_text(timing)
    assert "7 units timed" in text and f"{3600 / (16 + 34 / 7):.0f} units an hour" in text
    assert "qwen, bfloat16, on GPU B (3 units, 20.7 s a unit)" in text and text in autointerp_report(result).render()
    assert timing_text({}) == "Time: no unit of this run was timed."
    assert timing["wall"] is None  # no record says when it finished


def test_units_an_hour_of_wall_time_count_runs_at_once_once_and_gaps_not_at_all():
    from lmscope.viz.autointerp import timing_text

    def unit(end: int) -> dict:  # a unit of 100 s that finished ``end`` s after 08:00
        return {"seconds": {"explain": 40.0, "simulation": 60.0}, "scored_on": "cpu",
                "finished": f"2026-12-08T08:{end // 60:02d}:{end % 60:02d}+00:00"}
    runs_at_once = [unit(100), unit(200), unit(150), unit(250)]  # two runs, busy from 0 to 250 s
    later = [unit(3500), {"seconds": {"explain": 1.0}, "scored_on": "cpu"}]  # a later session; an old record
    wall = run_module.timing(runs_at_once + later)["wall"]
    assert wall["units"] == 5 and wall["hours"] == pytest.approx(350 / 3600)
    assert wall["units_per_hour"] == pytest.approx(5 / 350 * 3600)
    assert f"5 units in 0.1 hours while any was being scored, {5 / 350 * 3600:.0f} units an hour" in timing_text(
        run_module.timing(runs_at_once + later))
    assert run_module.timing(runs_at_once[:1])["wall"] is None


def test_examples_come_from_the_best_the_middle_and_the_worst():
    from lmscope.viz.autointerp import example_units

    result = _result([i / 30 for i in range(30)], [0.5], ["x"])
    picked = [r["detection"] for r in example_units(result, "planted", 10)]
    assert len(picked) == 10 and picked[0] == pytest.approx(29 / 30) and picked[-1] == 0.0
    assert any(0.4 < p < 0.6 for p in picked)


def test_units_are_scored_in_turn_across_kinds_of_different_sizes():
    todo = [("sae", 0, 7), ("sae", 1, 3), ("sae", 2, 9), ("planted", 0, 0), ("random", 0, 5), ("random", 1, 6)]
    assert run_module.in_turn(todo) == [("sae", 0, 7), ("planted", 0, 0), ("random", 0, 5), ("sae", 1, 3),
                                        ("random", 1, 6), ("sae", 2, 9)]
    assert run_module.in_turn([]) == []


def test_a_result_part_way_says_how_far_and_saves_and_reloads(tmp_path):
    from lmscope.io import read_json, write_json

    part = dataclasses.replace(_result([0.9, 0.8], [0.5], ["cities", "digits"]),
                               planned={"planted": 8, "random": 4, "sae": 3})
    assert part.progress() == {"scored": 6, "planned": 15,
                               "by_kind": {"planted": [2, 8], "random": [1, 4], "sae": [3, 3]}}
    assert part.summary()["progress"] == part.progress()
    back = run_module.AutointerpResult.load(part.save(tmp_path / "part"))
    assert back.planned == part.planned and back.summary()["progress"] == part.progress()
    cfg = read_json(tmp_path / "part" / "cfg.json")  # a result saved before results kept their plan: finished
    del cfg["planned"]
    write_json(tmp_path / "part" / "cfg.json", cfg)
    assert run_module.AutointerpResult.load(tmp_path / "part").summary()["progress"] is None


def test_runs_merge_into_one_comparison_with_their_dictionaries_named_apart():
    a = _result([0.9, 0.8], [0.5], ["cities", "digits"])  # planted, random and sae units; finished
    b = run_module.AutointerpResult("m", {"sae": "resid_post.2"}, [r for r in a.records if r["kind"] == "sae"], "e",
                                    "s", planned={"sae": 5})  # another dictionary's run, part way
    both = run_module.merged([run_module.relabelled(a, "sae-topk"), run_module.relabelled(b, "sae-tied")])
    assert list(both.summary()["kinds"]) == ["planted", "random", "sae-topk", "sae-tied"]
    assert both.sites == {"sae-topk": "resid_post.1", "sae-tied": "resid_post.2"}
    assert both.progress()["by_kind"] == {"planted": [2, 2], "random": [1, 1], "sae-topk": [3, 3], "sae-tied": [3, 5]}
    assert run_module.merged([a]).progress() is None  # finished runs make a finished comparison
    with pytest.raises(lmscope.InputError, match="the kind planted, random, sae: name each"):
        run_module.merged([a, a])
    with pytest.raises(lmscope.InputError, match="different models"):
        run_module.merged([a, dataclasses.replace(b, model="other")])
