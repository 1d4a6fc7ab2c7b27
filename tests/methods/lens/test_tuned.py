"""The readout seam and the tuned lens: identity = logit lens for every family, the KL's hand-written gradient,
training that lowers the KL and resumes exactly, the held-out comparison, the store, tuned-lens' own folders."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch

import lmscope
from lmscope.errors import ArtifactError, InputError, LmscopeError
from lmscope.io import load_result
from lmscope.methods.lens import (
    LOGIT,
    CompareConfig,
    LensConfig,
    TuneConfig,
    TunedLens,
    compare_lenses,
    logit_lens,
    read_tuned_lens_folder,
    resolve_readout,
    stored_lens,
    train_tuned_lens,
)
from lmscope.methods.lens import train as train_module
from lmscope.methods.lens.train import ROWS, SHRINK, Translators, kl_from_logits, shrink_translators
from lmscope.model.readout import lens_path
from tests.helpers import tiny_model, tiny_tokenizer

PROMPT = "The capital of France is"
SMALL = dict(tokens=512, seq_len=32, batch_size=4, tokens_per_step=256, checkpoint_every=1)


@pytest.fixture
def lm():
    return lmscope.load((tiny_model("llama"), tiny_tokenizer()))


def random_lens(lm, seed=0, scale=0.1) -> TunedLens:
    g = torch.Generator().manual_seed(seed)
    lens = TunedLens.identity(lm)
    lens.weight = scale * torch.randn(lens.weight.shape, generator=g)
    lens.bias = scale * torch.randn(lens.bias.shape, generator=g)
    return lens


def test_identity_tuned_lens_is_the_logit_lens(family):
    lm = lmscope.load((tiny_model(family), tiny_tokenizer()))
    logit = logit_lens(lm, PROMPT, LensConfig(top_k=5, readout="logit"))
    tuned = logit_lens(lm, PROMPT, LensConfig(top_k=5), readout=TunedLens.identity(lm))
    assert logit.readout["kind"] == "logit" and tuned.readout["kind"] == "tuned"
    assert torch.equal(logit.top_ids, tuned.top_ids)
    torch.testing.assert_close(logit.kl, tuned.kl)


def test_tuned_rows_read_through_their_translator(lm):
    lens = random_lens(lm)
    result = logit_lens(lm, PROMPT, LensConfig(top_k=3), readout=lens)
    ids = lm.tokenize(PROMPT)["input_ids"]
    _, cache = lm.run_with_cache(ids, [lmscope.Site(1, "resid_post")])
    h = cache[lmscope.Site(1, "resid_post")][0]  # row 2
    by_hand = lm.unembed(h + h @ lens.weight[2].T + lens.bias[2]).float().softmax(-1).topk(3, -1)
    assert torch.equal(result.top_ids[2], by_hand.indices)
    assert lens.transform_hidden(h, lm.n_layers) is h  # the output row has no translator
    final = logit_lens(lm, PROMPT, LensConfig(top_k=3, readout="logit"))
    assert torch.equal(result.top_ids[-1], final.top_ids[-1])


@pytest.mark.parametrize("rows", [3, ROWS + 5])
def test_kl_and_its_gradient_match_autograd(rows):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(rows, 50, generator=g, dtype=torch.float64) * 3
    p = torch.softmax(torch.randn(rows, 50, generator=g, dtype=torch.float64) * 2, -1)
    entropy = -(p * p.log()).sum(-1)
    weights = torch.rand(rows, generator=g, dtype=torch.float64)
    mine = z.clone().requires_grad_(True)
    (kl_from_logits(mine, p, entropy) * weights).sum().backward()
    ref = z.clone().requires_grad_(True)
    kl_ref = (p * (p.log() - torch.log_softmax(ref, -1))).sum(-1)
    (kl_ref * weights).sum().backward()
    torch.testing.assert_close(kl_from_logits(z, p, entropy), kl_ref.detach())
    torch.testing.assert_close(mine.grad, ref.grad)


def test_training_resumes_exactly(lm, tmp_path, monkeypatch):
    cfg = TuneConfig(**SMALL, autocast=False)
    whole = train_tuned_lens(lm, cfg, tmp_path / "whole")
    history = torch.tensor(whole.training["history"])  # (steps, layers)
    assert history.shape == (cfg.steps, lm.n_layers) and cfg.steps == 2
    # a run killed after its first step, then resumed from its checkpoint: the lens of one uninterrupted run
    step, calls = train_module._step, []

    def killed_at_the_second(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return step(*args, **kwargs)

    monkeypatch.setattr(train_module, "_step", killed_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        train_tuned_lens(lm, cfg, tmp_path / "split")
    monkeypatch.setattr(train_module, "_step", step)
    resumed = train_tuned_lens(lm, cfg, tmp_path / "split")
    torch.testing.assert_close(resumed.weight, whole.weight)
    torch.testing.assert_close(resumed.bias, whole.bias)
    assert resumed.training["history"] == whole.training["history"]
    with pytest.raises(LmscopeError, match="another model or configuration"):
        train_tuned_lens(lm, TuneConfig(**{**SMALL, "tokens": 256}, autocast=False), tmp_path / "split")


def test_comparison_checks_itself(lm):
    cfg = CompareConfig(tokens=256, seq_len=32, batch_size=4)
    result = compare_lenses(lm, [LOGIT, TunedLens.identity(lm), random_lens(lm)], cfg)
    assert result.kl.shape == (3, lm.n_layers + 1)
    torch.testing.assert_close(result.kl[:, -1], torch.zeros(3), atol=1e-5, rtol=0)  # the output row is exact
    torch.testing.assert_close(result.top1[:, -1], torch.ones(3))
    torch.testing.assert_close(result.kl[0], result.kl[1])  # identity translators: the logit lens
    assert not torch.allclose(result.kl[0, :-1], result.kl[2, :-1])
    assert result.positions > 0 and result.readouts == ["logit lens", "tuned lens", "tuned lens"]


def test_trained_lens_beats_the_logit_lens_on_held_out_text(lm):
    trained = train_tuned_lens(lm, TuneConfig(**{**SMALL, "tokens": 2048}))
    result = compare_lenses(lm, [LOGIT, trained], CompareConfig(tokens=512, seq_len=32, batch_size=4))
    assert result.worse_rows() == []
    assert float(result.kl[1, :-1].mean()) < 0.8 * float(result.kl[0, :-1].mean())


def test_save_load_and_the_store(lm, store_dir):
    assert resolve_readout(lm, "auto") is LOGIT
    with pytest.raises(InputError, match="no tuned lens"):
        resolve_readout(lm, "tuned")
    lens = random_lens(lm)
    lens.save(lens_path(lm))
    again = stored_lens(lm)
    assert isinstance(load_result(lens_path(lm)), TunedLens)
    torch.testing.assert_close(again.weight, lens.weight)
    assert resolve_readout(lm, "auto").kind == "tuned" and resolve_readout(lm, "logit") is LOGIT
    other = lmscope.load((tiny_model("llama", seed=3), tiny_tokenizer()))
    with pytest.raises(ArtifactError, match="another unembedding"):
        lens.check_model(other)


def write_tuned_lens_folder(folder, lm, bias=True, extra=None):
    """A folder as tuned-lens' TunedLens.save writes it: config.json + torch.save(layer_translators.state_dict())."""
    folder.mkdir(parents=True)
    translators = torch.nn.ModuleList([torch.nn.Linear(lm.d_model, lm.d_model, bias=bias)
                                       for _ in range(lm.n_layers)])
    torch.save(translators.state_dict(), folder / "params.pt")
    cfg = {"base_model_name_or_path": "tiny", "d_model": lm.d_model, "num_hidden_layers": lm.n_layers,
           "bias": bias, "base_model_revision": None, "unembed_hash": None, "lens_type": "linear_tuned_lens",
           **(extra or {})}
    (folder / "config.json").write_text(json.dumps(cfg))
    return translators


def test_tuned_lens_folders_read_exactly(lm, tmp_path):
    translators = write_tuned_lens_folder(tmp_path / "tl", lm)
    lens = read_tuned_lens_folder(tmp_path / "tl", lm)
    h = torch.randn(5, lm.d_model)
    for i, t in enumerate(translators):
        with torch.no_grad():
            torch.testing.assert_close(lens.transform_hidden(h, i), h + t(h))  # tuned-lens' transform_hidden
    write_tuned_lens_folder(tmp_path / "nobias", lm, bias=False)
    assert float(read_tuned_lens_folder(tmp_path / "nobias", lm).bias.abs().sum()) == 0


def test_tuned_lens_folders_refused(lm, tmp_path):
    write_tuned_lens_folder(tmp_path / "wide", lm, extra={"d_model": lm.d_model + 1})
    with pytest.raises(ArtifactError, match="width"):
        read_tuned_lens_folder(tmp_path / "wide", lm)
    write_tuned_lens_folder(tmp_path / "kind", lm, extra={"lens_type": "other"})
    with pytest.raises(ArtifactError, match="lens_type"):
        read_tuned_lens_folder(tmp_path / "kind", lm)
    folder = tmp_path / "code"
    write_tuned_lens_folder(folder, lm)
    torch.save({"0.weight": Exploit()}, folder / "params.pt")  # a pickle that would run code when loaded
    with pytest.raises(ArtifactError, match="weights-only"):
        read_tuned_lens_folder(folder, lm)
    assert not EXPLOIT_RAN.exists()
    with pytest.raises(ArtifactError, match="not a tuned-lens folder"):
        read_tuned_lens_folder(tmp_path, lm)


EXPLOIT_RAN = Path(tempfile.gettempdir()) / "lmscope-tuned-lens-exploit-ran"


class Exploit:
    """Unpickled, it would create EXPLOIT_RAN."""

    def __reduce__(self):
        return (open, (str(EXPLOIT_RAN), "w"))


def test_shrinking_keeps_the_identity_where_a_translator_hurts(lm):
    cfg = TuneConfig(**SMALL, select_tokens=256)
    lens = random_lens(lm, scale=0.0)
    lens.weight[1] = 3 * torch.randn(lens.weight.shape[1:], generator=torch.Generator().manual_seed(0))  # harmful
    tr = Translators(lens)
    record = shrink_translators(lm, tr, cfg, first_batch=0)
    kl = torch.tensor(record["kl"])  # (translators, len(SHRINK))
    assert kl.shape == (lm.n_layers, len(SHRINK)) and record["positions"] > 0 and record["tokens"] == 256
    assert record["layers"] == ["embed", *(str(i) for i in range(lm.n_layers - 1))]
    assert record["alpha"] == [SHRINK[int(i)] for i in kl.argmin(-1)]
    assert record["alpha"][1] < 1 and float(kl[1, -1]) > 2 * float(kl[1, 0])  # the random map reads far worse
    for row in (0, 2):  # identity translators: every a reads the same, and the identity (first) is kept
        torch.testing.assert_close(kl[row], kl[row, :1].expand(len(SHRINK)))
    weight, _ = tr.stacked()
    torch.testing.assert_close(weight[1], record["alpha"][1] * lens.weight[1])
    assert float(weight[0].abs().sum()) == 0


def test_the_identity_s_held_out_kl_is_the_logit_lens_comparison_s(lm):
    """Every position (position_fraction 1) of the same rows: a = 0 reads as compare_lenses' logit lens."""
    tr = Translators(random_lens(lm))
    record = shrink_translators(lm, tr, TuneConfig(**{**SMALL, "position_fraction": 1.0}, select_tokens=256), 0)
    cmp = compare_lenses(lm, [LOGIT], CompareConfig(split="train", tokens=256, seq_len=32, batch_size=4))
    assert record["positions"] == cmp.positions
    torch.testing.assert_close(torch.tensor(record["kl"])[:, 0].float(), cmp.kl[0, :-1], rtol=1e-4, atol=1e-5)


def test_a_trained_lens_is_checked_after_training_and_a_finished_run_reselects(lm, tmp_path):
    cfg = TuneConfig(**SMALL, select_tokens=512)
    trained = train_tuned_lens(lm, cfg, tmp_path / "run")
    record = trained.training["shrink"]
    assert record["positions"] > 0 and len(record["alpha"]) == lm.n_layers
    again = train_tuned_lens(lm, TuneConfig(**SMALL, select_tokens=1024), tmp_path / "run")  # no new steps
    assert again.training["history"] == trained.training["history"]
    assert again.training["shrink"]["tokens"] == 1024
    unchecked = train_tuned_lens(lm, TuneConfig(**SMALL, select_tokens=0), tmp_path / "run")
    assert unchecked.training["shrink"] == {}


def test_optimisers_and_schedules_are_tuned_lens():
    assert TuneConfig().optimizer == "adam"  # the CPU default (measured on both bundled models)
    sgd = TuneConfig(tokens=8192 * 10, tokens_per_step=8192, optimizer="sgd")
    assert (sgd.optimizer, sgd.lr, sgd.warmup, sgd.steps) == ("sgd", pytest.approx(0.1), 0, 10)
    factor = train_module._schedule(sgd)
    assert [factor(s) for s in (0, 5, 10)] == [1.0, 0.5, 0.0]
    adam = TuneConfig(tokens=8192 * 10, tokens_per_step=8192)
    assert (adam.lr, adam.warmup) == (pytest.approx(1e-3), 2)
    factor = train_module._schedule(adam)
    assert [factor(s) for s in (0, 1, 2, 6, 10)] == [0.0, 0.5, 1.0, 0.5, 0.0]
    opt = train_module._optimizer([torch.zeros(2, requires_grad=True)], adam)
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["amsgrad"]


def test_training_with_sgd_runs(lm):
    lens = train_tuned_lens(lm, TuneConfig(**SMALL, optimizer="sgd", select_tokens=0))
    assert lens.training["config"]["optimizer"] == "sgd" and float(lens.weight.abs().sum()) > 0


def test_a_corpus_shorter_than_asked_ends_the_run_there(lm, tmp_path, caplog):
    from tests.helpers import write_corpus

    corpus = write_corpus(tmp_path / "c.txt", extra_words=20, lengths=(5, 10), docs=40)  # a few hundred tokens
    cfg = TuneConfig(corpus=corpus, split="all", tokens=65536, seq_len=32, batch_size=4, tokens_per_step=128)
    lens = train_tuned_lens(lm, cfg, tmp_path / "run")
    steps = lens.training["steps"]
    assert 0 < steps < cfg.steps and lens.training["tokens"] == steps * 128
    assert "ran out" in caplog.text
    assert lens.training["shrink"] == {} and "no text left" in caplog.text
    again = train_tuned_lens(lm, cfg, tmp_path / "run")  # a rerun resumes at the end: the same lens
    torch.testing.assert_close(again.weight, lens.weight)
