"""A new SAE architecture is one class in one module: registered, it is configured, built, named in sweeps,
trained (its own learning rate and dead-latent remedy), saved and loaded like the built-in ones."""

import pytest
import torch

from lmscope.errors import ConfigError
from lmscope.methods.sae import Job, SaeConfig, build_sae, load_sae, registry, save_sae
from lmscope.methods.sae.arch.relu import ReluSAE
from lmscope.model.sites import Site


class HalfReluSAE(ReluSAE):
    """A toy architecture: ReLU at half the slope, its own defaults."""

    name = "half_relu"
    default_lr = 1e-4
    default_l1 = 2.0
    saelens_architecture = None  # SAELens has no such thing

    def activation(self, pre):
        return 0.5 * torch.relu(pre)


@pytest.fixture
def registered():
    registry.register_sae_class(HalfReluSAE)
    yield HalfReluSAE
    registry._CLASSES.pop("half_relu")


def test_a_registered_architecture_works_everywhere(registered, tmp_path):
    cfg = SaeConfig("half_relu", d_in=8, ratio=2)
    assert cfg.l1_coefficient == 2.0 and "half_relu" in registry.architectures()
    sae = build_sae(cfg, seed=0)
    assert isinstance(sae, HalfReluSAE) and sae.default_lr == 1e-4 and sae.resamples
    assert Job(Site(1, "resid_post"), cfg).name == "resid_post.1-half_relu-r2-l12"
    x = torch.randn(4, 8)
    save_sae(sae, tmp_path / "sae", site="resid_post.1")
    back, meta = load_sae(tmp_path / "sae", with_meta=True)
    assert isinstance(back, HalfReluSAE) and torch.allclose(back.encode(x), sae.encode(x), atol=1e-6)
    with pytest.raises(Exception, match="SAELens has no architecture"):
        save_sae(sae, tmp_path / "lens", format="saelens")


def test_unknown_and_duplicate_architectures_are_one_clear_error(registered):
    with pytest.raises(ConfigError, match="architecture must be one of .*half_relu"):
        SaeConfig("magic")
    with pytest.raises(ConfigError, match="already registered"):
        registry.register_sae_class(type("HalfReluSAE2", (ReluSAE,), {"name": "half_relu"}))
    with pytest.raises(ConfigError, match="needs a class attribute `name`"):
        registry.register_sae_class(type("Nameless", (ReluSAE,), {"name": ""}))
