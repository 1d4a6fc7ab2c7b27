"""``lmscope sae-harvest``, ``sae-train`` and ``sae-eval`` end to end on a tiny local model folder."""

import json

from lmscope.cli import main
from lmscope.methods.sae import save_sae
from tests.methods.sae import fixtures
from tests.methods.sae.fixtures import exact_sae

# the SAE tests' fixtures, used here by name (private_store is autouse: this module's tests get a private store too)
corpus, private_store = fixtures.corpus, fixtures.private_store


def test_sae_commands_end_to_end(tiny_llama_dir, corpus, tmp_path, capsys):
    model = ["--model", str(tiny_llama_dir)]
    small = ["--corpus", corpus, "--split", "all", "--seq-len", "16", "--batch-size", "4", "--tokens", "1024",
             "--buffer-rows", "512"]
    assert main([*model, "sae-harvest", "--sites", "resid_post.1", *small, "--out", str(tmp_path / "acts")]) == 0
    assert "activations at resid_post.1" in capsys.readouterr().out
    argv = [*model, "sae-train", "--sites", "resid_post.1", *small, "--cache", str(tmp_path / "acts"),
            "--sweep-architecture", "tied", "topk", "--sweep-k", "4", "8", "--ratio", "2", "--batch-tokens", "64",
            "--out", str(tmp_path / "saes")]
    assert main(argv) == 0
    assert "trained 3 SAEs" in capsys.readouterr().out  # tied once, topk at k = 4 and 8
    folder = next(p for p in (tmp_path / "saes").iterdir() if "topk" in p.name)
    assert main([*model, "sae-eval", str(folder), "--corpus", corpus, "--split", "all", "--tokens", "256",
                 "--seq-len", "16", "--out", str(tmp_path / "ev")]) == 0
    summary = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert summary["site"] == "resid_post.1" and summary["architecture"] == "topk" and summary["l0"] <= 8
    save_sae(exact_sae(32), tmp_path / "lens", format="saelens", site="resid_post.1")
    assert main([*model, "sae-eval", str(tmp_path / "lens"), "--corpus", corpus, "--split", "all", "--tokens",
                 "256", "--seq-len", "16", "--out", str(tmp_path / "ev2")]) == 0
    assert "CE recovered 1.000" in capsys.readouterr().out
