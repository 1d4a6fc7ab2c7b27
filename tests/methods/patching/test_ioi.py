"""IOI pairs (ABC corruption), single-unit feature identification on a tiny model, the half-effect count, a resumed
run (the CLI: tests/cli/test_patching_cli.py)."""

import pytest
import torch

import lmscope
from lmscope.data.ioi import ioi_pairs, read_ioi
from lmscope.methods.patching.ioi import IOIConfig, IOIFeatureResult, ioi_features
from lmscope.methods.sae import SaeConfig, build_sae
from lmscope.model.units import coordinates
from tests.helpers import tiny_lm, tiny_tokenizer
from tests.methods.patching.fixtures import RECORDS


def test_pairs_replace_the_second_subject_by_a_third_name(data):
    tok = tiny_tokenizer()
    pairs = ioi_pairs(tok, read_ioi(data), seed=0)
    assert [p.case_id for p in pairs] == [0, 1, 2, 3]
    for p in pairs:
        assert p.c not in (p.io, p.s) and p.clean.count(p.s) == 2 and p.corrupted.count(p.s) == 1
        assert p.corrupted.count(p.c) == 1 + p.clean.count(p.c)
        clean, corr = tok(p.clean)["input_ids"], tok(p.corrupted)["input_ids"]
        assert len(clean) == len(corr) and [i for i, (a, b) in enumerate(zip(clean, corr)) if a != b] == [
            p.s2_position]
        assert tok.decode([p.io_id]).strip() == p.io and tok.decode([p.s_id]).strip() == p.s
    assert ioi_pairs(tok, read_ioi(data), seed=0) == pairs  # seeded
    with pytest.raises(lmscope.DataError, match="no IOI record"):
        ioi_pairs(tok, RECORDS[4:])
    (data.parent / "bad.json").write_text("{}")
    with pytest.raises(lmscope.DataError, match="prompt"):
        read_ioi(data.parent / "bad.json")


def test_features_neurons_dims_on_a_tiny_model(data, tmp_path):
    lm = tiny_lm("llama", seed=1, sharp=True)  # (this random model prefers IO on pairs 0 and 1)
    pairs = ioi_pairs(lm.tokenizer, read_ioi(data))
    sae = build_sae(SaeConfig("topk", d_in=lm.d_model, ratio=2, k=4), seed=0)
    site = lmscope.Site(1, "resid_post")
    bases = [sae.units(site), coordinates("neurons", lmscope.Site(1, "mlp_key"), lm.d_mlp),
             coordinates("dims", site, lm.d_model)]
    result = ioi_features(lm, pairs, bases, IOIConfig(n_prompts=5, batch_size=16))
    assert result.n_pairs == 4 and result.n_correct == 2 and result.cases == [0, 1]
    assert result.exact["sae"].shape == (2, 64) and result.exact["dims"].shape == (2, lm.d_model)
    s = result.summary()
    assert set(s["bases"]) == {"sae", "neurons", "dims"} and s["bases"]["dims"]["units"] == lm.d_model
    assert 1 <= s["bases"]["dims"]["half_effect_units_median"] <= lm.d_model
    back = lmscope.load_result(result.save(tmp_path / "r"))
    assert back.summary() == s
    with pytest.raises(lmscope.InputError, match="nothing to patch"):  # a model that prefers S everywhere
        ioi_features(tiny_lm("llama", seed=0, sharp=True), pairs, bases)


def test_half_count_is_the_fewest_units_reaching_half_the_summed_effect():
    exact = torch.tensor([[0.5, 0.3, 0.1, 0.1, 0.0], [0.2, 0.2, 0.2, 0.2, 0.2]])
    r = IOIFeatureResult(model="m", sites={"x": "s"}, n_pairs=2, n_correct=2, n_top1=2, cases=[0, 1],
                         total_effect=torch.ones(2), exact={"x": exact}, attribution={"x": exact})
    assert r.half_count("x").tolist() == [1, 3]
    assert r.ranking("x", 2)[0] == {"unit": 0, "mean_effect": pytest.approx(0.35), "pairs": 2}
    assert r.agreement("x") == pytest.approx(1.0)


def test_a_killed_run_resumes_to_the_same_result(data, tmp_path, monkeypatch):
    from lmscope.methods.patching import ioi as ioi_module

    lm = tiny_lm("llama", seed=1, sharp=True)
    pairs = ioi_pairs(lm.tokenizer, read_ioi(data))
    bases = [coordinates("dims", lmscope.Site(1, "resid_post"), lm.d_model)]
    whole = ioi_features(lm, pairs, bases, IOIConfig(batch_size=16), out=tmp_path / "whole")
    real, calls = ioi_module._patch_pair, []

    def dies_on_the_second_pair(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(ioi_module, "_patch_pair", dies_on_the_second_pair)
    with pytest.raises(KeyboardInterrupt):
        ioi_features(lm, pairs, bases, IOIConfig(batch_size=16), out=tmp_path / "killed")
    monkeypatch.setattr(ioi_module, "_patch_pair", real)
    resumed = ioi_features(lm, pairs, bases, IOIConfig(batch_size=16), out=tmp_path / "killed")
    assert torch.equal(resumed.exact["dims"], whole.exact["dims"]) and resumed.cases == whole.cases
    with pytest.raises(lmscope.RunError):  # other settings in the same folder are refused
        ioi_features(lm, pairs, bases, IOIConfig(batch_size=16, position="last"), out=tmp_path / "killed")


def test_a_resumed_run_reads_the_screening_from_its_folder(data, tmp_path, monkeypatch):
    from lmscope.methods.patching import ioi as ioi_module

    lm = tiny_lm("llama", seed=1, sharp=True)
    pairs = ioi_pairs(lm.tokenizer, read_ioi(data))
    bases = [coordinates("dims", lmscope.Site(1, "resid_post"), lm.d_model)]
    whole = ioi_features(lm, pairs, bases, IOIConfig(batch_size=16), out=tmp_path / "run")
    assert (tmp_path / "run" / ioi_module.SCREENING).is_file()
    real, screened = ioi_module.answers, []
    monkeypatch.setattr(ioi_module, "answers", lambda *a: screened.append(1) or real(*a))
    again = ioi_features(lm, pairs, bases, IOIConfig(batch_size=16), out=tmp_path / "run")
    assert screened == [] and again.summary() == whole.summary()
    assert torch.equal(again.exact["dims"], whole.exact["dims"]) and torch.equal(again.total_effect, whole.total_effect)
    ioi_features(lm, pairs[:3], bases, IOIConfig(batch_size=16), out=tmp_path / "run")  # other pairs: screened
    assert screened == [1]
    with pytest.raises(lmscope.ConfigError, match="unit bases"):
        ioi_features(lm, pairs, [], IOIConfig())
