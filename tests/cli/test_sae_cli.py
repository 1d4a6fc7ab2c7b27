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


def test_sae_train_transcoders_at_every_layer_and_jumprelu(tiny_llama_dir, corpus, tmp_path, capsys):
    """--transcoder trains one transcoder per layer from one harvest; sae-eval reads and splices them; a sweep of
    JumpReLU L0 coefficients names its folders by the coefficient."""
    model = ["--model", str(tiny_llama_dir)]
    small = ["--corpus", corpus, "--split", "all", "--seq-len", "16", "--batch-size", "4", "--tokens", "1024",
             "--buffer-rows", "512", "--batch-tokens", "64", "--ratio", "2"]
    assert main([*model, "sae-train", "--transcoder", "--skip", "--architecture", "topk", "--k", "4", *small,
                 "--out", str(tmp_path / "tc")]) == 0
    names = sorted(p.name for p in (tmp_path / "tc").iterdir() if p.name != "checkpoint" and p.is_dir())
    assert names == [f"mlp_in.{i}-mlp_out.{i}-skiptopk-r2-k4" for i in range(3)]  # the tiny model's 3 layers
    assert main([*model, "sae-eval", str(tmp_path / "tc" / names[1]), "--corpus", corpus, "--split", "all",
                 "--tokens", "256", "--seq-len", "16", "--out", str(tmp_path / "ev")]) == 0
    summary = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert summary["site"] == "mlp_out.1" and summary["reads"] == "mlp_in.1"
    assert main([*model, "sae-train", "--transcoder", "--architecture", "topk", "--sites", "resid_post.1",
                 *small]) == 2
    assert "not an mlp_in site" in capsys.readouterr().err
    assert main([*model, "sae-train", *small]) == 2
    assert "give --sites" in capsys.readouterr().err
    assert main([*model, "sae-train", "--sites", "resid_post.1", "--architecture", "jumprelu", "--sweep-l0", "0.1",
                 "1", *small, "--out", str(tmp_path / "jr")]) == 0
    assert {p.name for p in (tmp_path / "jr").iterdir() if p.is_dir() and p.name != "checkpoint"} == {
        "resid_post.1-jumprelu-r2-l00.1", "resid_post.1-jumprelu-r2-l01"}


def test_sae_export_writes_any_layout_as_saelens_or_lmscope(tmp_path, capsys):
    """A sparsify skip transcoder and a SAELens gated SAE (written by the peers themselves) exported and read back."""
    from pathlib import Path

    import torch

    from lmscope.io import load_tensors
    from lmscope.methods.sae import load_sae

    data = Path(__file__).parents[1] / "data"
    x = load_tensors(data / "sparsify" / "io.safetensors")["x"]
    tc = data / "sparsify" / "transcoder" / "layers.1.mlp"
    assert main(["sae-export", str(tc), "--out", str(tmp_path / "tc")]) == 2  # SAELens has no TopK transcoder
    assert "SAELens has no architecture for a 'topk' skip transcoder" in capsys.readouterr().err
    assert main(["sae-export", str(tc), "--format", "lmscope", "--out", str(tmp_path / "tc")]) == 0
    assert "mlp_in.1 -> mlp_out.1" in capsys.readouterr().out
    back = load_sae(tmp_path / "tc")
    assert back.transcoder and back.target is not None and str(back.target) == "mlp_out.1"
    torch.testing.assert_close(back.output(x), load_sae(tc).output(x), atol=1e-5, rtol=1e-5)
    gated = data / "saelens" / "gated"
    assert main(["sae", "export", str(gated), "--format", "lmscope", "--out", str(tmp_path / "g")]) == 0
    again = load_sae(tmp_path / "g")
    assert again.name == "gated" and str(again.site) == "resid_post.1"
    torch.testing.assert_close(again.output(x), load_sae(gated).output(x), atol=1e-5, rtol=1e-5)
    assert main(["sae-export", str(tmp_path / "g"), "--out", str(tmp_path / "g2")]) == 0  # and back to SAELens
    torch.testing.assert_close(load_sae(tmp_path / "g2").output(x), again.output(x), atol=1e-5, rtol=1e-5)
    assert main(["sae-export", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
