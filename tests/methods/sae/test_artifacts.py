"""SAE folders: lmscope's layout (every architecture, input scale folded), SAELens' round trip, sparsify's layout."""

import pytest
import torch

import lmscope
from lmscope.io import read_json, save_tensors, write_json
from lmscope.methods.sae import ARCHITECTURES, SaeConfig, build_sae, load_sae, save_sae
from lmscope.model.sites import Site

X = torch.randn(7, 6)


def trained_like(arch: str, seed: int = 0):
    sae = build_sae(SaeConfig(arch, d_in=6, width=10, k=3), seed=seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn_like(p))
        sae.input_scale.fill_(2.5)
        if arch == "batchtopk":
            sae.threshold.fill_(0.05)
    sae.constrain()
    return sae.eval()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_lmscope_round_trip(arch, tmp_path):
    sae = trained_like(arch)
    back, meta = load_sae(save_sae(sae, tmp_path / arch, site="resid_post.1", model="m"), with_meta=True)
    assert back.name == arch and meta["site"] == "resid_post.1" and meta["model"] == "m"
    torch.testing.assert_close(back.encode(X), sae.encode(X), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(back.decode(back.encode(X)), sae.decode(sae.encode(X)), atol=1e-5, rtol=1e-5)
    if arch != "tied":  # the scale is folded into the weights
        assert float(back.input_scale) == 1.0


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_saelens_round_trip(arch, tmp_path):
    sae = trained_like(arch)
    folder = save_sae(sae, tmp_path / arch, site="resid_post.1", model="m", format="saelens")
    cfg = read_json(folder / "cfg.json")
    assert cfg["d_in"] == 6 and cfg["d_sae"] == 10 and (folder / "sae_weights.safetensors").is_file()
    assert cfg["hook_name"] == "blocks.1.hook_resid_post" and cfg["hook_layer"] == 1  # as SAELens names it
    back = load_sae(folder)
    assert back.site == Site(1, "resid_post") and back.model == "m"
    torch.testing.assert_close(back.decode(back.encode(X)), sae.decode(sae.encode(X)), atol=1e-5, rtol=1e-5)


def test_sparsify_layout_and_shape_checks(tmp_path):
    sae = trained_like("topk")
    w = sae.weights()
    folder = tmp_path / "layers.1"
    folder.mkdir()
    write_json(folder / "cfg.json", {"expansion_factor": 2, "normalize_decoder": True, "num_latents": 10, "k": 3,
                                     "d_in": 6})
    save_tensors(folder / "sae.safetensors", {"encoder.weight": w["W_enc"].T, "encoder.bias": w["b_enc"],
                                              "W_dec": w["W_dec"], "b_dec": w["b_dec"]})
    back = load_sae(folder)
    torch.testing.assert_close(back.encode(X * 2.5), sae.encode(X), atol=1e-5, rtol=1e-5)
    save_tensors(folder / "sae.safetensors", {"encoder.weight": w["W_enc"].T, "encoder.bias": w["b_enc"],
                                              "W_dec": w["W_dec"][:, :5], "b_dec": w["b_dec"]})
    with pytest.raises(lmscope.ArtifactError, match="W_dec has shape"):
        load_sae(folder)


def test_load_sae_gives_the_sae_with_its_site_and_model(tmp_path):
    from lmscope.methods.sae import SaeConfig, build_sae, load_sae, save_sae
    from lmscope.model.sites import Site

    sae = build_sae(SaeConfig("topk", d_in=8, ratio=2, k=2))
    back = load_sae(save_sae(sae, tmp_path / "a", site="resid_post.3", model="m"))
    assert back.site == Site(3, "resid_post") and back.model == "m" and back.meta["site"] == "resid_post.3"
    lens = load_sae(save_sae(sae, tmp_path / "b", site="blocks.3.hook_resid_post", model="m", format="saelens"))
    assert lens.site == Site(3, "resid_post")  # TransformerLens hook names are read too
    assert load_sae(save_sae(sae, tmp_path / "c")).site is None  # a folder that names no site
