"""Training: a killed run resumes to the same SAEs, a sweep harvests once, the cache replaces the model, errors."""

import dataclasses
import itertools

import pytest
import torch

import lmscope
from lmscope import Site
from lmscope.io import load_tensors, read_json
from lmscope.methods.sae import ActivationStream, Job, SaeConfig, harvest, load_sae, train_saes
from lmscope.methods.sae import train as train_module
from lmscope.methods.sae.harvest import batch_rows, batches_in

SITE = Site(1, "resid_post")


def jobs():
    return [Job(SITE, SaeConfig("tied", ratio=2)), Job(SITE, SaeConfig("topk", ratio=2, k=4)),
            Job(Site(0, "mlp_out"), SaeConfig("relu", width=40))]


def weights(paths):
    return [load_tensors(p / "sae.safetensors") for p in paths]


def count_forwards(monkeypatch, lm):
    calls = []
    real = lm.model.forward
    monkeypatch.setattr(lm.model, "forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_killed_run_resumes_to_the_same_saes(lm, harvest_cfg, train_cfg, tmp_path, monkeypatch):
    whole = train_saes(lm, jobs(), harvest_cfg, train_cfg, tmp_path / "whole")
    real, calls = train_module._step, []

    def dies_at_step_8(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3 * 7 + 2:  # in the middle of step 8 (3 SAEs a step), after the checkpoint of step 5
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "_step", dies_at_step_8)
    with pytest.raises(KeyboardInterrupt):
        train_saes(lm, jobs(), harvest_cfg, train_cfg, tmp_path / "killed")
    assert read_json(tmp_path / "killed" / "checkpoint" / "state.json")["step"] == 5
    monkeypatch.setattr(train_module, "_step", real)
    resumed = train_saes(lm, jobs(), harvest_cfg, train_cfg, tmp_path / "killed")
    assert [p.name for p in resumed] == [p.name for p in whole]
    for a, b in zip(weights(whole), weights(resumed)):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = read_json(whole[1] / "training_log.json")
    assert log == read_json(resumed[1] / "training_log.json") and log[-1]["step"] > 10
    tied = read_json(whole[0] / "training_log.json")
    assert tied[-1]["fve"] > tied[0]["fve"] + 0.1  # the paper's model learns (from a random dictionary)
    from lmscope.methods.sae.registry import sae_class  # the log names the learning rate applied, not its factor

    for architecture, row in (("tied", tied[0]), ("topk", log[0])):
        base = train_cfg.lr or sae_class(architecture).default_lr
        assert row["lr"] == pytest.approx(base * row["lr_factor"]) and 0 < row["lr_factor"] <= 1
    assert "l1_factor" in tied[0] and "l1_factor" not in log[0]  # TopK has no L1 term to warm up


def test_a_sweep_harvests_once_and_the_cache_replaces_the_model(lm, harvest_cfg, train_cfg, tmp_path, monkeypatch):
    calls = count_forwards(monkeypatch, lm)
    train_saes(lm, jobs()[:1], harvest_cfg, train_cfg, tmp_path / "one")
    alone = len(calls)
    calls.clear()
    streamed = train_saes(lm, jobs(), harvest_cfg, train_cfg, tmp_path / "three")
    assert len(calls) == alone > 0  # three SAEs, two sites: the same forward passes as one SAE
    harvest(lm, [Site(0, "mlp_out"), SITE], harvest_cfg, tmp_path / "cache")
    calls.clear()
    cached = train_saes(lm, jobs(), harvest_cfg, train_cfg, tmp_path / "cached", cache=tmp_path / "cache")
    assert not calls  # every activation came from the disk cache
    for a, b in zip(weights(streamed), weights(cached)):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_cache_of_another_site_or_model_is_refused(lm, harvest_cfg, tmp_path):
    harvest(lm, [SITE], harvest_cfg, tmp_path / "cache")
    with pytest.raises(lmscope.ArtifactError, match="another harvest.*sites"):
        ActivationStream(lm, [Site(0, "resid_post")], harvest_cfg, tmp_path / "cache")
    other = lmscope.LM(lm.model, lm.tokenizer, name="other")
    with pytest.raises(lmscope.ArtifactError, match="another harvest.*model"):
        ActivationStream(other, [SITE], harvest_cfg, tmp_path / "cache")


def test_a_cache_serves_a_shorter_run_and_a_longer_one_harvests_only_the_rest(lm, harvest_cfg, tmp_path,
                                                                               monkeypatch):
    short, long = (dataclasses.replace(harvest_cfg, tokens=t) for t in (harvest_cfg.tokens // 2, harvest_cfg.tokens))
    alone = [b[SITE] for _, b in ActivationStream(lm, [SITE], long).buffers()]  # 4 buffers, no cache
    harvest(lm, [SITE], long, tmp_path / "cache")
    calls = count_forwards(monkeypatch, lm)
    first = [b[SITE] for _, b in ActivationStream(lm, [SITE], short, tmp_path / "cache").buffers()]
    assert not calls and len(first) == 2 and all(torch.equal(a, b) for a, b in zip(first, alone))
    assert read_json(tmp_path / "cache" / "manifest.json")["tokens"] == long.tokens  # the longest length kept
    harvest(lm, [SITE], short, tmp_path / "grows")
    calls.clear()
    grown = [b[SITE] for _, b in ActivationStream(lm, [SITE], long, tmp_path / "grows").buffers()]
    assert len(calls) == 2 * long.buffer_rows // (long.batch_size * long.seq_len)  # the last two buffers only
    assert all(torch.equal(a, b) for a, b in zip(grown, alone))
    manifest = read_json(tmp_path / "grows" / "manifest.json")
    assert manifest["tokens"] == long.tokens and sorted(manifest["shards"]) == ["0", "1", "2", "3"]


def test_special_and_first_positions_are_left_out(lm, harvest_cfg, tmp_path):
    from dataclasses import replace

    rows = harvest_cfg.buffer_rows // harvest_cfg.seq_len
    n = {(s, f): next(ActivationStream(lm, [SITE], replace(harvest_cfg, drop_special=s, drop_first=f)).buffers())[1]
         [SITE].shape[0] for s in (True, False) for f in (True, False)}
    assert n[False, False] == harvest_cfg.buffer_rows and n[False, True] == harvest_cfg.buffer_rows - rows
    assert n[True, False] < harvest_cfg.buffer_rows  # the EOS between documents is dropped
    assert n[True, True] < n[True, False]  # and each row's first position (BOS or the attention sink)
    harvest(lm, [SITE], harvest_cfg, tmp_path / "cache")  # a cache written before drop_first existed kept it
    manifest = read_json(tmp_path / "cache" / "manifest.json")
    del manifest["drop_first"]
    lmscope.io.write_json(tmp_path / "cache" / "manifest.json", manifest)
    with pytest.raises(lmscope.ArtifactError, match="drop_first"):
        ActivationStream(lm, [SITE], harvest_cfg, tmp_path / "cache")
    ActivationStream(lm, [SITE], replace(harvest_cfg, drop_first=False), tmp_path / "cache")


def test_a_buffers_remainder_is_trained_on_and_the_run_has_its_nominal_steps(lm, harvest_cfg, train_cfg, tmp_path):
    from dataclasses import replace

    assert [batches_in(n, 64) for n in (31, 32, 95, 96, 480)] == [0, 1, 1, 2, 8]
    assert batch_rows(torch.arange(10, 20), 1, 6).tolist() == [16, 17, 18, 19, 10, 11]
    cfg = replace(harvest_cfg, drop_special=False)  # each 512-row buffer keeps 480 rows: 7.5 batches of 64
    stream = ActivationStream(lm, [SITE], cfg)
    buf = next(stream.buffers())[1][SITE]
    first = [b[SITE] for (i, _), b in itertools.takewhile(lambda x: x[0][0] == 0, stream.batches(64))]
    assert buf.shape[0] == 480 and len(first) == 8  # the half batch left over is completed, not dropped
    assert {tuple(r.tolist()) for r in torch.cat(first)} == {tuple(r.tolist()) for r in buf}
    path = train_saes(lm, jobs()[1:2], cfg, train_cfg, tmp_path / "run")[0]
    assert read_json(path / "cfg.json")["steps"] == cfg.tokens // train_cfg.batch_tokens  # 32: the whole schedule


def test_non_finite_loss_stops_with_a_checkpoint(lm, harvest_cfg, train_cfg, tmp_path, monkeypatch):
    real = train_module._backward

    def nan_at_step_7(t, x, y, step, total, cfg):  # a batch that makes the loss NaN, and its gradients with it
        return real(t, x * float("nan") if step == 7 else x, y, step, total, cfg)

    monkeypatch.setattr(train_module, "_backward", nan_at_step_7)
    with pytest.raises(lmscope.TrainingError, match="not finite at step 7.*checkpoint"):
        train_saes(lm, jobs()[:1], harvest_cfg, train_cfg, tmp_path / "nan")
    assert read_json(tmp_path / "nan" / "checkpoint" / "state.json")["step"] == 7
    saved = load_tensors(tmp_path / "nan" / "checkpoint" / "job-0.safetensors")
    assert all(torch.isfinite(v).all() for v in saved.values())  # the NaN gradients were never applied


def test_layer_out_of_range_and_trained_sae_reloads(lm, harvest_cfg, train_cfg, tmp_path):
    with pytest.raises(lmscope.SiteError, match="out of range"):
        train_saes(lm, [Job(Site(5, "resid_post"), SaeConfig("topk"))], harvest_cfg, train_cfg, tmp_path / "bad")
    path = train_saes(lm, jobs()[1:2], harvest_cfg, train_cfg, tmp_path / "ok")[0]
    sae, meta = load_sae(path, with_meta=True)
    assert meta["site"] == "resid_post.1" and meta["steps"] > 10 and sae.d_in == lm.d_model


def test_epochs_pass_over_the_cache_again_in_a_new_order_and_resume(lm, harvest_cfg, train_cfg, tmp_path,
                                                                     monkeypatch):
    from dataclasses import replace

    harvest(lm, [SITE], harvest_cfg, tmp_path / "cache")
    stream = ActivationStream(lm, [SITE], harvest_cfg, tmp_path / "cache")
    one = list(stream.batches(64))
    two = list(stream.batches(64, epochs=2))
    assert len(two) == 2 * len(one) and [p for p, _ in two[:len(one)]] == [p for p, _ in one]
    first, second = (torch.cat([b[SITE] for _, b in part]) for part in (two[:len(one)], two[len(one):]))
    assert not torch.equal(first, second)  # reshuffled ...
    harvested = {tuple(row.tolist()) for _, buf in stream.buffers() for row in buf[SITE]}
    assert {tuple(row.tolist()) for row in second} <= harvested  # ... rows of the same cache
    cfg = replace(train_cfg, epochs=2)
    calls = count_forwards(monkeypatch, lm)
    whole = train_saes(lm, jobs()[:1], harvest_cfg, cfg, tmp_path / "whole", cache=tmp_path / "cache")
    assert not calls and read_json(whole[0] / "cfg.json")["steps"] == len(two)
    real, steps = train_module._step, []

    def dies_in_the_second_epoch(*args, **kwargs):
        steps.append(1)
        if len(steps) == len(one) + 7:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "_step", dies_in_the_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_saes(lm, jobs()[:1], harvest_cfg, cfg, tmp_path / "killed", cache=tmp_path / "cache")
    monkeypatch.setattr(train_module, "_step", real)
    resumed = train_saes(lm, jobs()[:1], harvest_cfg, cfg, tmp_path / "killed", cache=tmp_path / "cache")
    a, b = weights(whole)[0], weights(resumed)[0]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_attention_sink_positions_are_left_out():
    from lmscope.model.tokens import below_sinks

    x = torch.randn(2, 6, 8)
    x[1, 4] *= 500  # one sink-like position (SmolLM2's reach ~150x the median norm)
    keep = torch.ones(2, 6, dtype=torch.bool)
    keep[0, 0] = False
    out = below_sinks(x, keep, 10.0)
    assert not out[1, 4] and int(out.sum()) == int(keep.sum()) - 1
    assert torch.equal(below_sinks(x, keep, 0.0), keep)


def test_autocast_trains_float32_saes_close_to_the_float32_run(lm, harvest_cfg, train_cfg, tmp_path, monkeypatch):
    from dataclasses import replace

    from lmscope.model import precision

    monkeypatch.setattr(precision, "bfloat16_slowdown", lambda device_type="cpu": 1.0)  # run it even where it is slow
    exact = train_saes(lm, jobs(), harvest_cfg, train_cfg, tmp_path / "fp32")
    mixed = train_saes(lm, jobs(), harvest_cfg, replace(train_cfg, autocast=True), tmp_path / "bf16")
    for a, b, path in zip(weights(exact), weights(mixed), mixed):
        assert all(v.dtype == torch.float32 for v in b.values())
        assert not all(torch.equal(a[k], b[k]) for k in a)  # the matmuls did run in bfloat16
        fve_exact = read_json(path.parent.parent / "fp32" / path.name / "training_log.json")[-1]["fve"]
        fve_mixed = read_json(path / "training_log.json")[-1]["fve"]
        assert fve_mixed == pytest.approx(fve_exact, abs=0.05)


def test_autocast_off_leaves_a_runs_settings_as_before_it_existed(lm, harvest_cfg, train_cfg):
    from dataclasses import replace

    off = train_module._settings(lm, jobs(), harvest_cfg, train_cfg)["train"]
    on = train_module._settings(lm, jobs(), harvest_cfg, replace(train_cfg, autocast=True))["train"]
    assert "autocast" not in off and on["autocast"] is True
    assert {k: v for k, v in on.items() if k != "autocast"} == off


def test_transcoders_train_from_one_harvest_save_load_and_evaluate(lm, harvest_cfg, train_cfg, tmp_path):
    """A transcoder per layer (mlp_in -> mlp_out) and a skip one, in one sweep; each learns, reloads and evaluates."""
    layers = range(lm.n_layers)
    tc = [Job(Site(layer, "mlp_in"), SaeConfig("topk", ratio=2, k=4), target=Site(layer, "mlp_out"))
          for layer in layers]
    skip = Job(Site(0, "mlp_in"), SaeConfig("jumprelu", ratio=2, transcoder=True, skip=True, l0_coefficient=0.01),
               target=Site(0, "mlp_out"))
    fast = dataclasses.replace(train_cfg, lr=3e-3, epochs=3)  # a few hundred steps' worth on the tiny corpus
    paths = train_saes(lm, [*tc, skip], harvest_cfg, fast, tmp_path / "tc")
    assert [p.name for p in paths][-1] == "mlp_in.0-mlp_out.0-skipjumprelu-r2-l00.01"
    for path, job in zip(paths, [*tc, skip]):
        sae = load_sae(path)
        assert sae.transcoder and sae.site == job.site and sae.target == job.target
        fve = [row["fve"] for row in read_json(path / "training_log.json")]
        assert sum(fve[-3:]) / 3 > sum(fve[:3]) / 3 + 0.1, fve  # it learns to predict the MLP's output
    sae = load_sae(paths[-1])
    assert sae.cfg.skip and float(sae.W_skip.detach().abs().sum()) > 0
    _, cache = lm.run_with_cache(torch.randint(0, 50, (2, 8)), [Site(0, "mlp_in"), Site(0, "mlp_out")])
    x, y = cache[Site(0, "mlp_in")], cache[Site(0, "mlp_out")]
    naive = (y - y.mean((0, 1))).pow(2).sum()
    assert float((sae.output(x) - y).detach().pow(2).sum()) < float(naive)  # better than the mean: it predicts
    result = lmscope.sae.evaluate_sae(lm, sae, sae.site, lmscope.sae.EvalConfig(corpus=harvest_cfg.corpus,
                                                                               tokens=512, seq_len=16))
    s = result.summary()
    assert s["site"] == "mlp_out.0" and s["reads"] == "mlp_in.0" and s["architecture"] == "skip jumprelu transcoder"
    assert s["ce_zero"] != s["ce_orig"] and -1 < s["fve"] <= 1


def test_a_buffer_larger_than_half_the_memory_is_refused_with_the_rows_that_fit(lm):
    from lmscope.methods.sae.harvest import check_buffer_memory

    sites = lm.sites("mlp_in") + lm.sites("mlp_out")  # every layer's transcoder pair
    check_buffer_memory(lm, sites, 65_536, memory=64 * 2**30)
    with pytest.raises(lmscope.ConfigError, match=r"give --buffer-rows 5,461 or fewer"):
        check_buffer_memory(lm, sites, 65_536, memory=2**24)  # half of 16 MiB over 2 x 6 sites x 32 floats x 4 bytes


def test_a_resampling_in_the_final_decay_is_warned_of(caplog):
    from lmscope.methods.sae.config import TrainConfig
    from lmscope.methods.sae.train import warn_late_resampling

    def warned(every, total, which=slice(None)):
        caplog.clear()
        warn_late_resampling(jobs()[which], TrainConfig(resample_every=every), total)
        return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]

    assert "after step 1000 of 1183" in warned(500, 1183)[0]  # the gemma tied run that ended at FVE -1.2
    assert "before step 947" in warned(500, 1183)[0]
    assert not warned(400, 640) and not warned(0, 1183)  # one resampling at 400 of 640; none at all
    assert not warned(500, 1183, slice(1, 2))  # TopK never resamples (AuxK keeps its latents alive)
    assert warned(320, 640)  # the last step itself: its revived latents would never train
