"""``lmscope patch`` and ``lmscope ioi-features`` end to end on tiny local model folders."""

from lmscope.cli import main
from lmscope.io import read_json, write_json
from lmscope.methods.sae import SaeConfig, build_sae, save_sae
from tests.helpers import tiny_model, tiny_tokenizer
from tests.methods.patching import fixtures

data = fixtures.data  # the IOI tests' fixture, used here by name


def test_patch_and_ioi_commands(tiny_llama_dir, data, tmp_path, capsys):
    out = tmp_path / "patch"
    assert main(["--model", str(tiny_llama_dir), "patch", "--clean", "The capital of France is",
                 "--corrupted", "The capital of Paris is", "--answer", "Paris", "--wrong", "France",
                 "--kinds", "resid_pre", "heads", "--attribution", "--out", str(out)]) == 0
    for name in ("patch.json", "patching.png", "report.html", "result/cfg.json", "attribution/cfg.json"):
        assert (out / name).is_file(), name
    assert main(["--model", str(tiny_llama_dir), "patch", "--clean", "The capital of France is",
                 "--corrupted", "The capital of", "--answer", "Paris"]) == 2
    assert "same number of tokens" in capsys.readouterr().err
    sae = build_sae(SaeConfig("topk", d_in=32, ratio=2, k=4), seed=0)
    save_sae(sae, tmp_path / "sae", site="resid_post.1", model="tiny-seed1")  # the model it is used on
    model = tmp_path / "tiny-seed1"
    tiny_model("llama", seed=1).save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    assert main(["--model", str(model), "ioi-features", "--data", str(data), "--sae", str(tmp_path / "sae"),
                 "--n-prompts", "2", "--out", str(tmp_path / "ioi")]) == 0
    for name in ("ioi.json", "ioi.png", "report.html", "result/cfg.json"):
        assert (tmp_path / "ioi" / name).is_file(), name
    assert "IOI pairs answered" in capsys.readouterr().out
    saelens = save_sae(sae, tmp_path / "saelens", site="resid_post.1", model="tiny-seed1", format="saelens")
    cfg = read_json(saelens / "cfg.json")  # as SAELens 6 writes it: hook and model under "metadata" only
    meta = {"hook_name": "blocks.1.hook_resid_post", "model_name": "tiny-seed1"}
    write_json(saelens / "cfg.json", {**{k: v for k, v in cfg.items() if k not in meta}, "metadata": meta})
    assert main(["--model", str(model), "ioi-features", "--data", str(data), "--sae", str(saelens),
                 "--n-prompts", "2", "--bases", "sae", "--out", str(tmp_path / "ioi6")]) == 0
    assert "resid_post.1" in read_json(tmp_path / "ioi6" / "result" / "cfg.json").__repr__()
    cfg.update(hook_name="", metadata={})  # a folder naming no site: --site fills it in
    write_json(saelens / "cfg.json", cfg)
    assert main(["--model", str(model), "ioi-features", "--data", str(data), "--sae", str(saelens),
                 "--n-prompts", "2", "--bases", "sae", "--out", str(tmp_path / "ioi7")]) == 2
    assert "give --site" in capsys.readouterr().err
    assert main(["--model", str(model), "ioi-features", "--data", str(data), "--sae", str(saelens),
                 "--site", "blocks.1.hook_resid_post", "--n-prompts", "2", "--bases", "sae",
                 "--out", str(tmp_path / "ioi7")]) == 0
    assert main(["--model", str(tiny_llama_dir), "ioi-features", "--data", str(data), "--layer", "1"]) == 2
    assert "nothing to patch" in capsys.readouterr().err
    assert main(["--model", str(tiny_llama_dir), "ioi-features", "--data", str(data)]) == 2
    assert "--layer" in capsys.readouterr().err
