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
from lmscope.methods.sae.artifacts import same_model

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
         "jumprelu_skip_transcoder", "gated", "gated_no_b_dec_in")


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


def _google_jumprelu(p: dict, x: torch.Tensor) -> torch.Tensor:
    """Google's published Gemma Scope forward (the JumpReLU tutorial), with Gemma Scope 2's affine skip."""
    pre = x @ p["w_enc"] + p["b_enc"]
    acts = pre * (pre > p["threshold"])
    out = acts @ p["w_dec"] + p["b_dec"]
    return out + x @ p["affine_skip_connection"] if "affine_skip_connection" in p else out


def _params(d_in: int, d_sae: int, d_out: int, affine: bool) -> dict:
    gen = torch.Generator().manual_seed(3)
    p = {"w_enc": torch.randn(d_in, d_sae, generator=gen) * 0.4, "b_enc": torch.randn(d_sae, generator=gen) * 0.2,
         "w_dec": torch.randn(d_sae, d_out, generator=gen) * 0.4, "b_dec": torch.randn(d_out, generator=gen),
         "threshold": torch.rand(d_sae, generator=gen) * 0.4}
    if affine:
        p["affine_skip_connection"] = torch.randn(d_in, d_out, generator=gen) * 0.1
    return p


def test_gemma_scope_2_transcoder_and_gemma_scope_1_sae_folders(tmp_path):
    """Google's own layouts: params.safetensors (Gemma Scope 2, affine skip) and params.npz (Gemma Scope 1)."""
    import numpy as np

    from lmscope.io import save_tensors

    x = torch.randn(8, 16)
    gs2 = tmp_path / "gemma-scope-2-270m-pt-transcoders" / "transcoder_all" / "layer_5_width_16k_l0_big_affine"
    gs2.mkdir(parents=True)
    p = _params(16, 48, 16, affine=True)
    save_tensors(gs2 / "params.safetensors", p)
    tc = load_sae(gs2)
    assert tc.transcoder and tc.cfg.skip and tc.site == Site(5, "mlp_in") and tc.target == Site(5, "mlp_out")
    assert same_model(tc.model, "gemma3-270m") and tc.model == "google/gemma-3-270m"
    torch.testing.assert_close(tc.output(x), _google_jumprelu(p, x), atol=1e-5, rtol=1e-5)
    gs1 = tmp_path / "gemma-scope-2b-pt-res" / "layer_20" / "width_16k" / "average_l0_71"
    gs1.mkdir(parents=True)
    q = _params(16, 48, 16, affine=False)
    np.savez(gs1 / "params.npz", **{k: v.numpy() for k, v in q.items()})
    sae = load_sae(gs1)
    assert not sae.transcoder and sae.site == Site(20, "resid_post") and sae.model == "google/gemma-2-2b"
    torch.testing.assert_close(sae.output(x), _google_jumprelu(q, x), atol=1e-5, rtol=1e-5)
    pre = x @ q["w_enc"] + q["b_enc"]
    torch.testing.assert_close(sae.encode(x), pre * (pre > q["threshold"]), atol=1e-5, rtol=1e-5)
    np.savez(gs1 / "params.npz", **{k: v.numpy() for k, v in q.items() if k != "threshold"})
    with pytest.raises(lmscope.ArtifactError, match="no threshold"):
        load_sae(gs1)
