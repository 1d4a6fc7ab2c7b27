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
        if arch in ("batchtopk", "matryoshka"):  # one inference threshold
            sae.threshold.fill_(0.05)
        if arch == "jumprelu":  # a threshold per latent
            sae.threshold.copy_(torch.rand(10) * 0.1)
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
    meta = cfg["metadata"]  # as SAELens 6 writes it: names under "metadata" with the version that says so
    assert meta["hook_name"] == "blocks.1.hook_resid_post" and meta["sae_lens_version"].startswith("6.")
    back = load_sae(folder)
    assert back.site == Site(1, "resid_post") and back.model == "m"
    torch.testing.assert_close(back.decode(back.encode(X)), sae.decode(sae.encode(X)), atol=1e-5, rtol=1e-5)


def test_saelens_6_metadata_names_the_site_and_model(tmp_path):
    """SAELens 6 keeps hook_name and model_name under "metadata" only: the folder still names its site and model."""
    folder = save_sae(trained_like("topk"), tmp_path / "s", site="resid_post.3", model="m", format="saelens")
    cfg = read_json(folder / "cfg.json")
    for key in ("hook_name", "model_name", "hook_layer"):
        cfg.pop(key, None)
    write_json(folder / "cfg.json", {**cfg, "metadata": {"hook_name": "blocks.3.hook_resid_post",
                                                         "model_name": "smollm2-135m", "hook_head_index": None}})
    sae = load_sae(folder)
    assert sae.site == Site(3, "resid_post") and sae.model == "smollm2-135m"
    assert lmscope.sae.check_sae(sae) == Site(3, "resid_post")  # every command takes it without --site
    write_json(folder / "cfg.json", {**cfg, "metadata": {"hook_name": "blocks.3.attn.hook_z", "hook_head_index": 2}})
    with pytest.raises(lmscope.ArtifactError, match="hook_head_index is 2"):
        load_sae(folder)


def test_saelens_scales_outside_the_weights_are_folded_exactly_or_refused(tmp_path):
    """TopK's rescale_acts_by_decoder_norm and a checkpoint's activation scaler, against SAELens' own formulas."""
    sae = trained_like("topk")
    folder = save_sae(sae, tmp_path / "s", site="resid_post.1", model="m", format="saelens")
    cfg, w = read_json(folder / "cfg.json"), lmscope.io.load_tensors(folder / "sae_weights.safetensors")
    norms = torch.rand(10) + 0.5  # decoder rows not unit-norm: SAELens scales pre-activations by them
    raw = {**w, "W_dec": w["W_dec"] * norms[:, None]}
    save_tensors(folder / "sae_weights.safetensors", raw)
    write_json(folder / "cfg.json", {**cfg, "rescale_acts_by_decoder_norm": True})
    h = X @ raw["W_enc"] + raw["b_enc"] - raw["b_dec"] @ raw["W_enc"]  # SAELens: (x - b_dec) W_enc + b_enc
    h = h * raw["W_dec"].norm(dim=-1)
    top = h.topk(3, dim=-1)
    codes = torch.zeros_like(h).scatter_(-1, top.indices, top.values.relu())
    out = (codes / raw["W_dec"].norm(dim=-1)) @ raw["W_dec"] + raw["b_dec"]
    back = load_sae(folder)
    torch.testing.assert_close(back.encode(X), codes, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(back.output(X), out, atol=1e-5, rtol=1e-5)
    save_tensors(folder / "sae_weights.safetensors", w)
    write_json(folder / "cfg.json", {**cfg, "normalize_activations": "expected_average_only_in"})
    with pytest.raises(lmscope.ArtifactError, match="no activation_scaler.json"):
        load_sae(folder)
    write_json(folder / "activation_scaler.json", {"scaling_factor": 2.0, "has_whitening": False})
    torch.testing.assert_close(load_sae(folder).encode(X), sae.encode(X * 2.0), atol=1e-5, rtol=1e-5)
    for mode in ("constant_norm_rescale", "layer_norm"):
        write_json(folder / "cfg.json", {**cfg, "normalize_activations": mode})
        with pytest.raises(lmscope.ArtifactError, match=f"normalize_activations is '{mode}'"):
            load_sae(folder)


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


def test_same_model_reads_bundled_names_hub_ids_folders_and_gguf_files():
    from lmscope.methods.sae.artifacts import same_model

    assert same_model("gemma3-270m", "google/gemma-3-270m") and same_model("gemma-3-270m", "gemma3-270m")
    assert same_model("smollm2-135m", "SmolLM2-135M-Instruct.Q4_1") and same_model("/models/tiny-llama/", "tiny-llama")
    assert not same_model("gemma3-270m", "smollm2-135m") and not same_model("tiny-llama", "tiny-gpt2")


def test_check_sae_against_the_model_site_and_weights(lm, tmp_path):
    from lmscope.methods.sae.artifacts import check_sae

    folder = save_sae(build_sae(SaeConfig("topk", d_in=lm.d_model, ratio=2, k=4)), tmp_path / "a",
                      site="resid_post.1", model=lm.name)
    sae = load_sae(folder)
    assert check_sae(sae) == check_sae(sae, lm) == check_sae(sae, lm, "resid_post.1") == Site(1, "resid_post")
    assert check_sae(sae, lm, "resid_post.-2") == Site(1, "resid_post")  # the same site, counted from the end
    with pytest.raises(lmscope.ArtifactError, match="trained at resid_post.1, not resid_post.2"):
        check_sae(sae, site="resid_post.2")
    assert check_sae(sae, lm, "resid_post.2", force=True) == Site(2, "resid_post")
    with pytest.raises(lmscope.ArtifactError, match=r"reads d_in 32 activations, but mlp_key.1 of .* is 48 wide"):
        check_sae(sae, lm, "mlp_key.1", force=True)  # a width that does not fit is never forced
    with pytest.raises(lmscope.ArtifactError, match="reads d_in 32 activations, got 48 wide ones"):
        sae.encode(torch.randn(2, 48))  # and an SAE used unchecked says so too, not a RuntimeError
    sae.model = "gemma3-270m"
    with pytest.raises(lmscope.ArtifactError, match="trained on 'gemma3-270m'"):
        check_sae(sae, lm)
    assert check_sae(sae, lm, force=True) == Site(1, "resid_post")
    with torch.no_grad():
        sae.W_dec[0, 0] = float("inf")  # spoiled after loading: caught before use
    with pytest.raises(lmscope.ArtifactError, match="W_dec holds 1 of 2048 values that are not finite"):
        check_sae(sae, lm, force=True)
    small = build_sae(SaeConfig("topk", d_in=lm.d_model, width=16))  # the default k (32) does not fit 16 latents
    small.site = Site(1, "resid_post")
    with pytest.raises(lmscope.ArtifactError, match="k 32 is more latents than the dictionary has"):
        check_sae(small, lm)
    with pytest.raises(lmscope.ConfigError, match="k 17 is more latents"):
        SaeConfig("topk", d_in=8, width=16, k=17)
    with pytest.raises(lmscope.SiteError, match="names no site; give --site"):
        check_sae(build_sae(SaeConfig("relu", d_in=lm.d_model, width=8)), lm)


def test_folders_that_are_not_an_sae(tmp_path):
    with pytest.raises(lmscope.ArtifactError, match="does not exist"):
        load_sae(tmp_path / "nothing")
    folder = tmp_path / "sparse"
    folder.mkdir()
    write_json(folder / "cfg.json", {"k": 3})
    save_tensors(folder / "sae.safetensors", {"encoder.weight": torch.zeros(10, 6), "W_dec": torch.zeros(10, 6),
                                              "b_dec": torch.zeros(6)})
    with pytest.raises(lmscope.ArtifactError, match="no encoder.bias"):
        load_sae(folder)
    save_tensors(folder / "sae.safetensors", {"encoder.weight": torch.zeros(10, 6), "encoder.bias": torch.zeros(10),
                                              "W_dec": torch.zeros(10, 6), "b_dec": torch.zeros(6)})
    write_json(folder / "cfg.json", {"k": "three"})
    with pytest.raises(lmscope.ArtifactError, match="k must be a whole number >= 0, got 'three'"):
        load_sae(folder)
    write_json(folder / "cfg.json", {"k": 11})
    with pytest.raises(lmscope.ArtifactError, match="k 11 is more latents than the dictionary has"):
        load_sae(folder)
    write_json(folder / "cfg.json", {"k": 3})
    assert load_sae(folder).d_sae == 10
