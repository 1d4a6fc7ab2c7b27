"""Folders written by the peers' own code load to the peers' own numbers.

tests/data/sparsify/ was written by eai-sparsify 1.3.3 itself (bench/peers/sparsify_fixtures.py, in its own venv):
a TopK SAE on ``layers.1``, a skip transcoder on ``layers.1.mlp`` and a groupmax SAE, with sparsify's outputs on a
fixed input.
"""

from pathlib import Path

import pytest
import torch

import lmscope
from lmscope import Site
from lmscope.io import load_tensors, read_json, write_json
from lmscope.methods.sae import load_sae

SPARSIFY = Path(__file__).parents[2] / "data" / "sparsify"


def test_sparsify_sae_and_skip_transcoder_give_sparsifys_outputs():
    io = load_tensors(SPARSIFY / "io.safetensors")
    x = io["x"]  # (8, 16)
    sae = load_sae(SPARSIFY / "sae" / "layers.1")
    assert sae.site == Site(1, "resid_post") and not sae.transcoder
    torch.testing.assert_close(sae.encode(x), io["sae.latents"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae.output(x), io["sae.out"], atol=1e-5, rtol=1e-5)
    tc = load_sae(SPARSIFY / "transcoder" / "layers.1.mlp")
    assert tc.transcoder and tc.cfg.skip and tc.site == Site(1, "mlp_in") and tc.target == Site(1, "mlp_out")
    torch.testing.assert_close(tc.encode(x), io["transcoder.latents"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tc.output(x), io["transcoder.out"], atol=1e-5, rtol=1e-5)


def test_sparsify_skip_transcoder_from_before_the_transcode_field(tmp_path):
    """sparsify's first skip transcoders have no "transcode" key and subtract b_dec from the input: still exact."""
    import shutil

    folder = tmp_path / "layers.1.mlp"
    shutil.copytree(SPARSIFY / "transcoder" / "layers.1.mlp", folder)
    cfg = read_json(folder / "cfg.json")
    write_json(folder / "cfg.json", {k: v for k, v in cfg.items() if k != "transcode"})
    raw, x = load_tensors(folder / "sae.safetensors"), load_tensors(SPARSIFY / "io.safetensors")["x"]
    pre = torch.relu((x - raw["b_dec"]) @ raw["encoder.weight"].T + raw["encoder.bias"])
    top = pre.topk(4, dim=-1)
    z = torch.zeros_like(pre).scatter_(-1, top.indices, top.values)
    expected = z @ raw["W_dec"] + raw["b_dec"] + x @ raw["W_skip"].T  # sparsify 1.3.3's forward of such a folder
    tc = load_sae(folder)
    assert tc.transcoder and tc.target == Site(1, "mlp_out")
    torch.testing.assert_close(tc.output(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("change, fragment", [({"activation": "groupmax"}, "activation is 'groupmax'"),
                                              ({"signed": True}, "signed is true")])
def test_sparsify_settings_lmscope_does_not_compute_are_refused(change, fragment, tmp_path):
    import shutil

    folder = tmp_path / "layers.1"
    shutil.copytree(SPARSIFY / "sae" / "layers.1", folder)
    write_json(folder / "cfg.json", {**read_json(folder / "cfg.json"), **change})
    with pytest.raises(lmscope.ArtifactError, match=fragment):
        load_sae(folder)


def test_a_groupmax_coder_written_by_sparsify_is_refused():
    with pytest.raises(lmscope.ArtifactError, match="activation is 'groupmax'"):
        load_sae(SPARSIFY / "sae_groupmax" / "layers.1")


SAELENS = Path(__file__).parents[2] / "data" / "saelens"  # written by SAELens 6.54.12: bench/peers/saelens_fixtures.py
CASES = ("standard", "topk_rescaled", "jumprelu", "jumprelu_no_b_dec_in", "transcoder", "skip_transcoder",
         "jumprelu_skip_transcoder")


@pytest.mark.parametrize("case", CASES)
def test_saelens_folders_give_saelens_codes_and_outputs(case):
    """SAELens' own save_model folders: lmscope's codes and outputs equal SAELens' encode and forward."""
    io = load_tensors(SAELENS / "io.safetensors")
    sae = load_sae(SAELENS / case)
    torch.testing.assert_close(sae.encode(io["x"]), io[f"{case}.codes"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae.output(io["x"]), io[f"{case}.out"], atol=1e-5, rtol=1e-5)
    if "transcoder" in case:  # Gemma Scope 2's Hugging Face module names say the sites exactly
        assert sae.transcoder and sae.site == Site(1, "mlp_in") and sae.target == Site(1, "mlp_out")
        assert sae.cfg.skip == ("skip" in case)
    else:
        assert sae.site == Site(1, "resid_post") and sae.model == "smollm2-135m"
