"""The interface every sparse autoencoder implements, in the SAELens weight layout.

W_enc: (d_in, d_sae), b_enc: (d_sae,), W_dec: (d_sae, d_in), b_dec: (d_in,). ``encode`` gives the feature
activations c, ``decode`` the reconstruction x_hat = c W_dec + b_dec, ``forward`` both and the architecture's
training loss as a :class:`ForwardOutput`. Subclasses set ``name`` and implement ``pre_acts``, ``activation`` and
``loss_terms``; those whose decoder rows must keep unit norm set ``unit_decoder``. The class attributes below say
the rest (defaults, dead-latent remedy, how a sweep names it, how SAELens names it), and
:func:`lmscope.methods.sae.registry.register_sae_class` makes the class an architecture: a new one is one module.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
from torch import nn

from lmscope.errors import ArtifactError
from lmscope.methods.sae.config import SaeConfig
from lmscope.model.sites import Site
from lmscope.model.units import Units


class ForwardOutput(NamedTuple):
    """What one forward pass of an SAE gives, for a batch of n activations."""

    x_hat: torch.Tensor  # (n, d_in) reconstruction
    codes: torch.Tensor  # (n, d_sae) feature activations
    loss: torch.Tensor  # () the architecture's training loss
    reconstruction: torch.Tensor  # () its reconstruction term, as weighted in the loss
    sparsity: torch.Tensor  # () its sparsity term (L1; AuxK for TopK variants), as weighted in the loss


class SparseAutoencoder(nn.Module):
    """Base class: encode, decode, forward (with the loss), and the unit-norm decoder constraint where needed."""

    name: ClassVar[str] = ""
    unit_decoder: ClassVar[bool] = False
    default_lr: ClassVar[float] = 2e-4  # Adam's learning rate when TrainConfig.lr is 0 (the paper's)
    default_l1: ClassVar[float | None] = None  # the L1 coefficient when SaeConfig leaves it unset (L1 variants)
    resamples: ClassVar[bool] = False  # dead latents are resampled (dead.resample); else the loss revives them
    sweep_knob: ClassVar[str] = "k"  # the SaeConfig field that tells a sweep's SAEs apart: "k" or "l1_coefficient"
    saelens_architecture: ClassVar[str | None] = None  # SAELens' name for it (None: not saved for SAELens)
    keeps_input_scale: ClassVar[bool] = False  # saved with the input scale apart, not folded into the weights
    applies_b_dec_to_input: ClassVar[bool] = True  # encodes x - b_dec (SAELens' apply_b_dec_to_input)

    def __init__(self, cfg: SaeConfig):
        super().__init__()
        self.cfg = cfg
        self.d_in, self.d_sae = cfg.d_in, cfg.d_sae
        self.site: Site | None = None  # where it reads, when known (load_sae fills these in from its folder)
        self.model = ""
        self.meta: dict = {}
        self.path: str = ""  # the folder it was loaded from ('' when built in memory)
        self.register_buffer("input_scale", torch.ones(()))  # inputs are multiplied by it, outputs divided

    # ---- the SAELens layout; subclasses store what they need and expose these ----------------------------------
    W_enc: torch.Tensor
    b_enc: torch.Tensor
    W_dec: torch.Tensor
    b_dec: torch.Tensor

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations (n, d_sae)."""
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """Feature activations from pre-activations (default: ReLU)."""
        return torch.relu(pre)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations c: (..., d_in) -> (..., d_sae); activations of another width are one ArtifactError."""
        if x.shape[-1] != self.d_in:  # an SAE of another model or site (check_sae says so before any work)
            where = f"the SAE in {self.path}" if self.path else f"the {self.name} SAE"
            raise ArtifactError(f"{where} reads d_in {self.d_in} activations, got {x.shape[-1]} wide ones: it belongs "
                                "to another model or site")
        return self.activation(self.pre_acts(x * self.input_scale))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Reconstruction: (..., d_sae) -> (..., d_in)."""
        return (codes @ self.W_dec + self.b_dec) / self.input_scale

    def units(self, site: Site, name: str = "sae") -> Units:
        """The features as :class:`lmscope.model.units.Units` at ``site``: what patching and autointerp take.

        a = encode(x); D = the decoder rows, in the site's units (the input scale undone).
        """
        sae = self.eval()
        return Units(name, site, self.d_sae, lambda x: sae.encode(x.float()),
                     lambda idx: sae.W_dec[idx].detach() / sae.input_scale)

    def forward(self, x: torch.Tensor, l1_scale: float = 1.0, dead: torch.Tensor | None = None) -> ForwardOutput:
        """Encode, decode and compute the loss (in scaled units) of a batch x: (n, d_in).

        ``l1_scale``: the L1 warm-up factor; ``dead``: (d_sae,) bool mask of the latents AuxK may revive.
        """
        x = x * self.input_scale
        pre = self.pre_acts(x)
        codes = self.activation(pre)
        x_hat = codes @ self.W_dec + self.b_dec
        recon, sparsity = self.loss_terms(x, x_hat, codes, pre, l1_scale, dead)
        return ForwardOutput(x_hat / self.input_scale, codes, recon + sparsity, recon, sparsity)

    def loss_terms(self, x, x_hat, codes, pre, l1_scale, dead) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, sparsity) terms of the architecture's loss."""
        raise NotImplementedError

    # ---- the unit-norm decoder (TopK variants) ------------------------------------------------------------------
    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove the part of W_dec's gradient that would change its rows' norms (before the optimiser step)."""
        w = self.W_dec
        if self.unit_decoder and w.grad is not None:
            w.grad -= (w.grad * w).sum(-1, keepdim=True) * w

    @torch.no_grad()
    def constrain(self) -> None:
        """Put the decoder rows back on the unit sphere (after the optimiser step)."""
        if self.unit_decoder:
            self.W_dec /= self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    # ---- weights in and out -------------------------------------------------------------------------------------
    def weights(self) -> dict[str, torch.Tensor]:
        """The SAELens-layout tensors (plus ``threshold`` for BatchTopK), detached."""
        return {k: getattr(self, k).detach().clone() for k in ("W_enc", "b_enc", "W_dec", "b_dec")}

    @torch.no_grad()
    def load_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        """Set the weights from SAELens-layout tensors (shapes checked by the caller)."""
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(self, name).copy_(tensors[name])

    @torch.no_grad()
    def init_b_dec(self, value: torch.Tensor) -> None:
        """Set the decoder bias (from the geometric median or mean of the first batch)."""
        self.b_dec.copy_(value)

    # ---- what the rest of lmscope asks the architecture ---------------------------------------------------------
    @classmethod
    def job_tag(cls, cfg: SaeConfig) -> str:
        """The part of a sweep job's name that tells it apart: ``k32`` or ``l18.6e-04``."""
        return f"k{cfg.k}" if cls.sweep_knob == "k" else f"l1{cfg.l1_coefficient:g}"

    def saelens_export(self, weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
        """(the folded weights as SAELens stores them, extra cfg.json fields) of this architecture."""
        return weights, {}

    @classmethod
    def from_saelens(cls, architecture: str, cfg: dict, tensors: dict[str, torch.Tensor], d_in: int,
                     d_sae: int) -> SaeConfig | None:
        """The SaeConfig under which this class reads a SAELens folder of ``architecture`` (None: it does not)."""
        return None

    @torch.no_grad()
    def resample_latents(self, index: torch.Tensor, directions: torch.Tensor, x: torch.Tensor,
                         enc_norm: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
        """Point the latents ``index`` at ``directions`` (n_dead, d_in); x is the scaled batch.

        Returns the (parameter, dimension) pairs whose optimiser state must be zeroed there. Default (untied):
        decoder row = direction, encoder row = 0.2 x the alive encoders' mean norm along it, encoder bias 0
        (Anthropic's resampling).
        """
        self.W_dec[index] = directions
        self.W_enc[:, index] = (directions * 0.2 * enc_norm).T
        self.b_enc[index] = 0.0
        return [(self.W_dec, 0), (self.W_enc, 1), (self.b_enc, 0)]


def squared_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Mean over rows of |x - x_hat|^2 (summed over coordinates)."""
    return (x - x_hat).pow(2).sum(-1).mean()


@torch.no_grad()
def geometric_median(x: torch.Tensor, iters: int = 100, tol: float = 1e-5) -> torch.Tensor:
    """The point minimising the summed distances to the rows of ``x`` (n, d), by Weiszfeld's iteration."""
    point = x.mean(0)
    for _ in range(iters):
        weights = 1 / (x - point).norm(dim=-1).clamp_min(1e-8)  # (n,)
        new = (weights[:, None] * x).sum(0) / weights.sum()
        if (new - point).norm() < tol * point.norm().clamp_min(1e-8):
            return new
        point = new
    return point
