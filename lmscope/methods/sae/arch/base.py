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

KNOB_TAGS = {"k": "k", "l1_coefficient": "l1", "l0_coefficient": "l0"}  # a sweep knob -> its tag in job names


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
    sweep_knob: ClassVar[str] = "k"  # the SaeConfig field telling a sweep's SAEs apart: a key of KNOB_TAGS
    saelens_architecture: ClassVar[str | None] = None  # SAELens' name for it (None: not saved for SAELens)
    keeps_input_scale: ClassVar[bool] = False  # saved with the input scale apart, not folded into the weights
    applies_b_dec_to_input: ClassVar[bool] = True  # encodes x - b_dec (SAELens' apply_b_dec_to_input)
    can_transcode: ClassVar[bool] = True  # may read one site and write another (not a tied dictionary)

    def __init__(self, cfg: SaeConfig):
        super().__init__()
        self.cfg = cfg
        self.d_in, self.d_sae, self.d_out = cfg.d_in, cfg.d_sae, cfg.out_width
        self.transcoder = cfg.transcoder
        self.site: Site | None = None  # where it reads, when known (load_sae fills these in from its folder)
        self.target: Site | None = None  # where a transcoder writes, when known
        self.model = ""
        self.meta: dict = {}
        self.path: str = ""  # the folder it was loaded from ('' when built in memory)
        self.register_buffer("input_scale", torch.ones(()))  # inputs are multiplied by it, outputs divided
        if self.transcoder:  # its outputs live at another site, with a scale of their own
            self.register_buffer("output_scale", torch.ones(()))
        if cfg.skip:
            self.W_skip = nn.Parameter(torch.zeros(self.d_out, self.d_in))  # (d_out, d_in), zero at the start

    def init_untied(self, norm: float = 1.0) -> None:
        """Untied weights: decoder rows random directions of ``norm``, the encoder their transpose, biases 0.

        W_dec: (d_sae, d_out); a transcoder between spaces of different widths gets encoder directions of its own.
        """
        w_dec = norm * nn.functional.normalize(torch.randn(self.d_sae, self.d_out), dim=-1)
        self.W_dec = nn.Parameter(w_dec)
        w_enc = w_dec.T.clone() if self.d_out == self.d_in else \
            norm * nn.functional.normalize(torch.randn(self.d_sae, self.d_in), dim=-1).T.contiguous()
        self.W_enc = nn.Parameter(w_enc)
        self.b_enc = nn.Parameter(torch.zeros(self.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(self.d_out))

    # ---- the SAELens layout; subclasses store what they need and expose these ----------------------------------
    W_enc: torch.Tensor
    b_enc: torch.Tensor
    W_dec: torch.Tensor
    b_dec: torch.Tensor

    @property
    def centers_input(self) -> bool:
        """Whether the encoder reads x - b_dec (an autoencoder's choice; a transcoder's b_dec is an output bias)."""
        return self.applies_b_dec_to_input and not self.transcoder

    @property
    def out_scale(self) -> torch.Tensor:
        """The scale of what it writes: the input's for an autoencoder, a transcoder's own output scale."""
        return self.output_scale if self.transcoder else self.input_scale

    def input_shift(self) -> torch.Tensor:
        """What the encoder subtracts from its input: b_dec (d_in,), or zeros for a transcoder."""
        return self.b_dec if self.centers_input else self.b_enc.new_zeros(self.d_in)

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations (n, d_sae)."""
        return (x - self.b_dec if self.centers_input else x) @ self.W_enc + self.b_enc

    def skip_term(self, x: torch.Tensor) -> torch.Tensor | float:
        """A skip transcoder's affine term x W_skip^T of scaled inputs x (..., d_in); 0 without one."""
        return x @ self.W_skip.T if self.cfg.skip else 0.0

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
        """Reconstruction: (..., d_sae) -> (..., d_out) (a skip transcoder's skip term is not in it: :meth:`output`)."""
        return (codes @ self.W_dec + self.b_dec) / self.out_scale

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """What it writes for inputs x (..., d_in): the reconstruction, or a transcoder's prediction (skip included)."""
        out = self.decode(self.encode(x))
        return out + self.skip_term(x * self.input_scale) / self.out_scale if self.cfg.skip else out

    def units(self, site: Site, name: str = "sae") -> Units:
        """The features as :class:`lmscope.model.units.Units` at ``site``: what patching and autointerp take.

        a = encode(x); D = the decoder rows, in the site's units (the input scale undone). A transcoder's features
        are read at ``site`` (its input) and written elsewhere: they read (autointerp) but have no directions at
        ``site`` (patching refuses them).
        """
        sae = self.eval()
        directions = None if sae.transcoder else (lambda idx: sae.W_dec[idx].detach() / sae.input_scale)
        return Units(name, site, self.d_sae, lambda x: sae.encode(x.float()), directions)

    def forward(self, x: torch.Tensor, l1_scale: float = 1.0, dead: torch.Tensor | None = None,
                target: torch.Tensor | None = None) -> ForwardOutput:
        """Encode, decode and compute the loss (in scaled units) of a batch x: (n, d_in).

        ``l1_scale``: the sparsity warm-up factor; ``dead``: (d_sae,) bool mask of the latents AuxK may revive;
        ``target``: (n, d_out) what a transcoder predicts (an autoencoder reconstructs x).
        """
        x, y = self.scaled(x, target)
        pre = self.pre_acts(x)
        codes = self.activation(pre)
        y_hat = codes @ self.W_dec + self.b_dec + self.skip_term(x)
        recon, sparsity = self.loss_terms(y, y_hat, codes, pre, l1_scale, dead)
        return ForwardOutput(y_hat / self.out_scale, codes, recon + sparsity, recon, sparsity)

    def scaled(self, x: torch.Tensor, target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(scaled input, scaled target): the target is the input for an autoencoder (a transcoder needs one)."""
        if self.transcoder and target is None:
            raise ArtifactError(f"{self.name} transcoder: training needs the target (what it predicts) beside the "
                                "input")
        x = x * self.input_scale
        return x, (x if target is None else target * self.out_scale)

    def loss_terms(self, x, x_hat, codes, pre, l1_scale, dead) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, sparsity) terms of the architecture's loss."""
        raise NotImplementedError

    # ---- the unit-norm decoder (TopK variants) ------------------------------------------------------------------
    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove the part of W_dec's gradient that would change its rows' norms (before the optimiser step).

        Not for a transcoder: its rows are free in norm (see :class:`TopKSAE`).
        """
        w = self.W_dec
        if self.unit_decoder and not self.transcoder and w.grad is not None:
            w.grad -= (w.grad * w).sum(-1, keepdim=True) * w

    @torch.no_grad()
    def constrain(self) -> None:
        """Put the decoder rows back on the unit sphere (after the optimiser step); a transcoder's stay free."""
        if self.unit_decoder and not self.transcoder:
            self.W_dec /= self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    # ---- weights in and out -------------------------------------------------------------------------------------
    def weight_names(self) -> tuple[str, ...]:
        """The SAELens-layout tensors it has: W_enc, b_enc, W_dec, b_dec, and W_skip for a skip transcoder."""
        return ("W_enc", "b_enc", "W_dec", "b_dec", *(("W_skip",) if self.cfg.skip else ()))

    def weights(self) -> dict[str, torch.Tensor]:
        """The SAELens-layout tensors (plus ``threshold`` for BatchTopK / JumpReLU), detached."""
        return {k: getattr(self, k).detach().clone() for k in self.weight_names()}

    @torch.no_grad()
    def load_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        """Set the weights from SAELens-layout tensors (shapes checked by the caller)."""
        for name in self.weight_names():
            getattr(self, name).copy_(tensors[name])

    @torch.no_grad()
    def init_b_dec(self, value: torch.Tensor) -> None:
        """Set the decoder bias (from the geometric median or mean of the first batch)."""
        self.b_dec.copy_(value)

    # ---- what the rest of lmscope asks the architecture ---------------------------------------------------------
    @classmethod
    def job_tag(cls, cfg: SaeConfig) -> str:
        """The part of a sweep job's name that tells it apart: ``k32`` or ``l18.6e-04``."""
        return f"{KNOB_TAGS[cls.sweep_knob]}{getattr(cfg, cls.sweep_knob):g}"

    def saelens_export(self, weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
        """(the folded weights as SAELens stores them, extra cfg.json fields) of this architecture."""
        return weights, {}

    @classmethod
    def saelens_import(cls, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A SAELens folder's tensors under lmscope's names (the inverse of :meth:`saelens_export`'s renaming)."""
        return tensors

    @classmethod
    def from_saelens(cls, architecture: str, cfg: dict, tensors: dict[str, torch.Tensor], d_in: int,
                     d_sae: int) -> SaeConfig | None:
        """The SaeConfig under which this class reads a SAELens folder of ``architecture`` (None: it does not)."""
        return None

    @torch.no_grad()
    def resample_directions(self, x: torch.Tensor, errors: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(len(rows), d_in) unit directions for resampled latents, from the drawn ``rows`` of the scaled batch.

        ``x`` (n, d_in) the scaled batch, ``errors`` (n, d_in) its reconstruction errors. Default: the drawn inputs
        less the decoder bias, normalised (Anthropic's resampling).
        """
        return torch.nn.functional.normalize(x[rows] - self.b_dec, dim=-1)

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
