"""ROME on tiny random models: the edited fact's probability rises on every family, undo is bit-identical,
edits save / reload / apply, statistics are cached and resume, and bad input gets one clear error."""


import pytest
import torch
from safetensors.torch import load_file

import lmscope
from lmscope.errors import ArtifactError
from lmscope.methods.rome import EditRequest, RomeConfig, RomeEdit, apply_edit, rank_one_update, rome_edit
from lmscope.methods.rome import stats as rome_stats
from lmscope.methods.rome.stats import SecondMoment, second_moment
from lmscope.model.weights import has_patches
from tests.helpers import tiny_lm, write_corpus

# The subject ends the prompt, so a tiny random model's next token depends on the edited MLP output directly.
REQUEST = EditRequest("the capital of {}", "Eiffel Tower", "Paris")
OTHER = "The capital of France is located in the city of"
WORDS = ["The", "capital", "of", "France", "is", "Paris", "Eiffel", "Tower", "located", "in", "city", "the", "a"]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LMSCOPE_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus.txt", extra_words=60, lengths=(5, 30), docs=120)


def tiny(family="llama", seed=0):
    """A tiny random model with a sharpened output, so that probabilities can move."""
    return tiny_lm(family, seed, sharp=True)


def config(corpus, **kw):
    """ROME's steps with a step size for tiny models: their MLP outputs (|v0| ~ 0.01) are far smaller than a
    large model's, for which lr 0.5, weight decay 0.5 and the clamp at 4 |v0| are tuned."""
    tiny_scale = {"v_lr": 0.05, "v_weight_decay": 0.0, "clamp_norm_factor": 1000.0}
    return RomeConfig(**{"layer": 1, "contexts_per_length": 2, "stats_corpus": corpus, "stats_samples": 100,
                         **tiny_scale, **kw})


def p_target(lm, text, target="Paris"):
    ids = lm.tokenize(text)["input_ids"]
    tid = lm.tokenizer(target, add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        return float(torch.softmax(lm(ids)[0, -1], -1)[tid])


def test_edit_raises_the_target_and_undo_is_bit_identical(family, corpus):
    lm = tiny(family)
    ids = lm.tokenize(REQUEST.text)["input_ids"]
    with torch.no_grad():
        before = lm(ids)
    p0 = p_target(lm, REQUEST.text)
    handle = rome_edit(lm, REQUEST, config(corpus))
    p1 = p_target(lm, REQUEST.text)
    assert p1 > max(5 * p0, 0.03), (p0, p1)
    assert handle.edit.losses[-1]["loss"] < handle.edit.losses[0]["loss"]
    handle.undo()
    with torch.no_grad():
        assert torch.equal(lm(ids), before)


def test_the_update_maps_the_key_to_the_value():
    torch.manual_seed(0)
    w, k_star, k = torch.randn(6, 10), torch.randn(10), torch.randn(10)
    a = torch.randn(10, 10)
    c = a @ a.T + torch.eye(10)
    v, v_star = w @ k, torch.randn(6)
    u, right = rank_one_update(k_star, k, v, v_star, c)
    torch.testing.assert_close((w + torch.outer(right, u)) @ k, v_star, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(u, torch.linalg.solve(c, k_star) / torch.linalg.solve(c, k_star).norm())


def test_save_reload_and_apply_to_a_fresh_model(tmp_path, corpus):
    lm = tiny()
    handle = rome_edit(lm, REQUEST, config(corpus))
    with torch.no_grad():
        edited = lm(lm.tokenize(OTHER)["input_ids"])
    back = RomeEdit.load(handle.edit.save(tmp_path / "edit"))
    assert back.request == REQUEST and back.config == handle.edit.config and back.layer == 1
    fresh = tiny()
    with apply_edit(fresh, back), torch.no_grad():
        assert torch.equal(fresh(fresh.tokenize(OTHER)["input_ids"]), edited)
    with pytest.raises(lmscope.EditError, match="other weights"):
        apply_edit(tiny(seed=1), back)


def test_sequential_edits_undo_in_reverse_order(corpus):
    lm = tiny()
    ids = lm.tokenize(OTHER)["input_ids"]
    with torch.no_grad():
        before = lm(ids)
    first = rome_edit(lm, REQUEST, config(corpus))
    second = rome_edit(lm, EditRequest("the city of {}", "France", "Tower"), config(corpus))
    with pytest.raises(lmscope.EditError, match="reverse order"):
        first.undo()
    second.undo()
    first.undo()
    with torch.no_grad():
        assert torch.equal(lm(ids), before)


def test_stats_are_cached_and_resume_after_a_kill(corpus, monkeypatch):
    lm = tiny()
    monkeypatch.setattr(rome_stats, "WINDOW", 16)
    full = second_moment(lm, 1, corpus, samples=100, path=None)
    assert full.texts == 100 and full.tokens > 100 and full.matrix.shape == (lm.d_mlp, lm.d_mlp)
    torch.testing.assert_close(full.matrix, full.matrix.T)

    real, calls = rome_stats._window_sum, []

    def dies_on_the_third(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(rome_stats, "_window_sum", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        second_moment(lm, 0, corpus, samples=100)
    monkeypatch.setattr(rome_stats, "_window_sum", real)
    resumed = second_moment(lm, 0, corpus, samples=100)
    monkeypatch.setattr(rome_stats, "WINDOW", 1000)
    rome_stats.shutil.rmtree(rome_stats.stats_path(lm, 0, corpus, 100, 512))
    straight = second_moment(lm, 0, corpus, samples=100)
    assert resumed.texts == straight.texts and resumed.tokens == straight.tokens
    torch.testing.assert_close(resumed.matrix, straight.matrix, atol=1e-6, rtol=1e-6)

    monkeypatch.setattr(rome_stats, "_window_sum", None)  # a cached result needs no forward pass
    assert torch.equal(second_moment(lm, 1, corpus, samples=100).matrix, full.matrix)


def test_errors(corpus, tmp_path):
    lm = tiny()
    with pytest.raises(lmscope.InputError, match="exactly once.*did you mean .The {} is located in"):
        EditRequest("The Eiffel Tower is located in", "Eiffel Tower", "Rome")  # hint: "The {} is located in"
    with pytest.raises(lmscope.InputError, match="empty target"):
        EditRequest("{} is in", "Eiffel Tower", " ")
    with pytest.raises(lmscope.InputError, match="empty subject"):
        EditRequest("{} is in", "  ", "Rome")
    with pytest.raises(lmscope.SiteError, match="out of range"):
        rome_edit(lm, REQUEST, config(corpus, layer=7))
    with pytest.raises(lmscope.InputError, match="trace-dataset"):
        rome_edit(lm, REQUEST, config(corpus, layer="auto"))
    stats0 = second_moment(lm, 0, corpus, samples=50)
    with pytest.raises(lmscope.InputError, match="do not match.*layer 0"):
        rome_edit(lm, REQUEST, config(corpus), stats=stats0)
    with pytest.raises(lmscope.InputError, match="other weights"):
        stats0.check(tiny(seed=1), 0)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "cfg.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt"):
        SecondMoment.load(tmp_path / "broken")


@pytest.mark.parametrize("family_name", ["llama", "gpt2", "gemma3_text"])
def test_same_update_as_romes_procedure(family_name, corpus):
    from lmscope.methods.rome import context_prefixes
    from lmscope.methods.rome.reference import reference_update

    lm = tiny(family_name)
    cfg = config(corpus)
    moment = second_moment(lm, 1, corpus, samples=100).matrix
    expected = reference_update(lm, REQUEST, 1, context_prefixes(lm, cfg), cfg, moment)
    with rome_edit(lm, REQUEST, cfg) as handle:
        got = handle.edit.delta()
    assert float((got - expected).norm() / expected.norm()) < 1e-3


# ---- CounterFact evaluation ----------------------------------------------------------------------------------------
def test_summarize_known_scores():
    from lmscope.methods.rome.evaluate import summarize

    # one record: rewrite won, paraphrases 1 of 2, neighbourhood kept
    scores = [{"rewrite": [[0.1, 2.0]], "paraphrase": [[0.5, 1.0], [3.0, 1.0]], "neighborhood": [[4.0, 0.2]]}]
    m = summarize(scores)
    assert m["ES"] == 100 and m["PS"] == 50 and m["NS"] == 100
    assert m["EM"] == pytest.approx(100 * (torch.exp(torch.tensor(-0.1)) - torch.exp(torch.tensor(-2.0))).item())
    assert m["S"] == pytest.approx(3 / (1 / 100 + 1 / 50 + 1 / 100))


def test_ngram_entropy():
    from lmscope.methods.rome.evaluate import ngram_entropy

    assert ngram_entropy("a a a a a") == 0.0  # one bigram, one trigram
    # "a b c d": 3 distinct bigrams (log2 3), 2 distinct trigrams (1 bit)
    assert ngram_entropy("a b c d") == pytest.approx((2 / 3 * torch.log2(torch.tensor(3.0)).item() + 4 / 3) / 2)


@pytest.mark.parametrize("family_name", ["llama", "gpt2"])
def test_fluency_samples_are_batched_like_one_prompt_at_a_time(family_name):
    from lmscope.methods.rome.evaluate import EvalConfig, sample_ids, sample_texts

    lm = tiny(family_name)
    prompts = ["Paris is the capital of", "The Eiffel Tower"]  # different lengths: left padding in the batch
    greedy = EvalConfig(gen_tokens=12, gen_top_k=1)  # top-1 sampling is greedy: comparable row by row
    batched = sample_texts(lm, prompts, greedy)
    assert batched == [sample_texts(lm, [p], greedy)[0] for p in prompts]
    for prompt, ids in zip(prompts, sample_ids(lm, prompts, greedy)):
        prompt_ids = lm.tokenizer(prompt)["input_ids"]
        assert ids[:len(prompt_ids)] == prompt_ids and len(ids) == 12  # the prompt counts towards gen_tokens
    sampled = EvalConfig(gen_tokens=12)
    together = sample_texts(lm, prompts, sampled, seeds=[7, 8])
    assert together == sample_texts(lm, prompts, sampled, seeds=[7, 8])  # seeded
    assert together[1] == sample_texts(lm, prompts[1:], sampled, seeds=[8])[0]  # a row's draws are its own
    assert together != sample_texts(lm, prompts, sampled, seeds=[9, 10])


def _counterfact_file(tmp_path):
    import json

    rows = [{"case_id": i, "prompt": f"the capital of {s}", "subject": s, "target_new": new, "ground_truth": true,
             "rephrase_prompt": f"the city of {s}", "locality_prompt": "the capital of France",
             "locality_ground_truth": true}
            for i, (s, new, true) in enumerate([("Eiffel Tower", "Paris", "France"), ("Tower", "city", "a"),
                                                ("France", "Tower", "Paris")])]
    path = tmp_path / "cf.json"
    path.write_text(json.dumps(rows))
    return path


def test_counterfact_evaluation_resumes(tmp_path, corpus, monkeypatch):
    from lmscope.data import load_counterfact
    from lmscope.methods.rome import evaluate as ev

    records = load_counterfact(_counterfact_file(tmp_path))
    cfg, ecfg = config(corpus), ev.EvalConfig(gen_tokens=4)
    whole = ev.evaluate_counterfact(tiny(), records, tmp_path / "whole", cfg, ecfg)
    assert whole.edited["ES"] > whole.unedited["ES"] or whole.edited["EM"] > whole.unedited["EM"]
    assert "GE" in whole.edited and any("RS" in n for n in whole.notes)

    real, calls = ev.record_scores, []

    def dies_during_the_second_edit(*args, **kw):  # 3 unedited records, then edited record 0, then record 1
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(ev, "record_scores", dies_during_the_second_edit)
    lm = tiny()
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate_counterfact(lm, records, tmp_path / "killed", cfg, ecfg)
    monkeypatch.setattr(ev, "record_scores", real)
    assert len(calls) == 5 and not has_patches(lm.model)  # the interrupted edit was undone
    resumed = ev.evaluate_counterfact(lm, records, tmp_path / "killed", cfg, ecfg)
    assert resumed.edited == whole.edited and resumed.unedited == whole.unedited
    with pytest.raises(lmscope.RunError, match="another model or configuration"):
        ev.evaluate_counterfact(lm, records, tmp_path / "killed", config(corpus, v_steps=3), ecfg)


@pytest.mark.parametrize("family_name", ["llama", "gpt2", "gpt_neox", "phi", "gemma3_wide"])
def test_suffix_rows_give_the_same_value_as_whole_rows(family_name, corpus, monkeypatch):
    from lmscope.methods.rome import prefixes as rome_prefixes
    from lmscope.methods.rome import value

    if family_name == "gemma3_wide":  # Gemma 3 with a sliding window wider than the prompts (as the real one)
        import transformers as T

        from tests.helpers import LLAMA_LIKE, TINY_CONFIGS

        wide = T.Gemma3TextConfig(**LLAMA_LIKE, head_dim=8, sliding_window=48,
                                  layer_types=["sliding_attention", "sliding_attention", "full_attention"])
        monkeypatch.setitem(TINY_CONFIGS, family_name, lambda: wide)
    lm = tiny(family_name)
    cfg = config(corpus)
    request = EditRequest("{} is located in the city of", "Eiffel Tower", "Paris")  # subject mid-prompt
    prefixes = rome_prefixes.context_prefixes(lm, cfg)
    assert isinstance(value._rows_runner(lm, value.value_batch(lm, request, prefixes, "{} is a"), 1),
                      value._SuffixRows)
    fast = value.compute_value(lm, request, 1, prefixes, cfg)
    monkeypatch.setattr(value, "_rows_runner", value._FullRows)
    whole = value.compute_value(lm, request, 1, prefixes, cfg)
    assert len(fast.losses) == len(whole.losses)
    torch.testing.assert_close(fast.v_star, whole.v_star, atol=1e-4, rtol=1e-4)


def test_shipped_statistics_are_used_only_when_everything_matches(corpus, monkeypatch, tmp_path):
    from lmscope.methods.rome import shipped

    lm = tiny()
    computed = second_moment(lm, 1, corpus, samples=100, path=tmp_path / "computed")
    digest = shipped.pack(computed.matrix, tmp_path / "m.safetensors")
    assert torch.equal(shipped.unpack(load_file(str(tmp_path / "m.safetensors"))["upper"]), computed.matrix)
    entry = shipped.ShippedMoment(lm.name, 1, "m.safetensors", digest, rome_stats.key_fingerprint(lm, 1),
                                  computed.texts, computed.tokens)
    monkeypatch.setattr(shipped, "ASSETS", tmp_path)
    monkeypatch.setattr(shipped, "SHIPPED", (entry,))
    monkeypatch.setattr(shipped, "DEFAULTS", (corpus, 100, 512))
    real = rome_stats._window_sum
    monkeypatch.setattr(rome_stats, "_window_sum", None)  # no forward pass may run: the shipped file is used
    first = second_moment(lm, 1, corpus, samples=100)
    assert torch.equal(first.matrix, computed.matrix) and first.texts == computed.texts
    assert rome_stats.stats_path(lm, 1, corpus, 100, 512).is_dir()  # installed into the store
    monkeypatch.setattr(rome_stats, "_window_sum", real)
    for other in (dict(layer=0), dict(samples=99), dict(max_len=64)):  # anything else is computed, not shipped
        args = {"layer": 1, "samples": 100, "max_len": 512, **other}
        assert shipped.find(lm.name, args["layer"], corpus, args["samples"], args["max_len"],
                            entry.key_fingerprint) is None
    assert shipped.find(lm.name, 1, corpus, 100, 512, "another-weights") is None
    (tmp_path / "m.safetensors").write_bytes((tmp_path / "m.safetensors").read_bytes()[:-4] + b"\0\0\0\0")
    assert shipped.read(entry) is None  # a file whose hash moved is refused


def test_shipped_files_match_their_pins():
    from lmscope.methods.rome import shipped

    for entry in shipped.SHIPPED:
        matrix = shipped.read(entry)
        assert matrix is not None, entry.file
        assert torch.equal(matrix, matrix.T) and bool((matrix.diagonal() > 0).all())
