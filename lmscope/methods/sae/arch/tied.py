"""The paper's model (Cunningham et al. 2023): c = ReLU(M x + b), x_hat = M^T c, rows of M of unit norm.

Loss: the mean squared error over coordinates + alpha ||c||_1 (mean over rows). M is normalised in the forward
pass, so its rows are unit vectors wherever it is used; there is no decoder bias (it is zero in the SAELens layout).
"""

from __future__ import annotations

import torch
from torch import nn

from lmscope.methods.sae.arch.l1 import L1SAE
from lmscope.methods.sae.arch.sparse import L1Step
from lmscope.methods.sae.config import SaeConfig
from lmscope.methods.sae.registry import register_sae_class

TIED_FIRING = 0.01  # fraction of a batch on which a resampled tied latent fires at first


@register_sae_class
class TiedSAE(L1SAE):
    """Tied ReLU + L1 with a unit-norm dictionary."""

    name = "tied"
    default_lr = 1e-3
    default_l1 = 8.6e-4  # Cunningham et al.'s alpha
    saelens_architecture = "standard"
    keeps_input_scale = True  # W_enc = W_dec^T must hold: the scale stays a separate tensor
    applies_b_dec_to_input = False
    can_transcode = False  # W_enc = W_dec^T: it writes where it reads

    def __init__(self, cfg: SaeConfig):
        super().__init__(cfg)
        self.M = nn.Parameter(torch.nn.functional.normalize(torch.randn(self.d_sae, self.d_in), dim=-1))
        self.bias = nn.Parameter(torch.zeros(self.d_sae))
        self.register_buffer("zero_b_dec", torch.zeros(self.d_in))

    @property
    def W_dec(self) -> torch.Tensor:  # noqa: N802
        """The dictionary, rows normalised: (d_sae, d_in)."""
        return self.M / self.M.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    @property
    def W_enc(self) -> torch.Tensor:  # noqa: N802
        """The encoder is the dictionary's transpose: (d_in, d_sae)."""
        return self.W_dec.T

    @property
    def b_enc(self) -> torch.Tensor:
        """The encoder bias b."""
        return self.bias

    @property
    def b_dec(self) -> torch.Tensor:
        """Zero: the paper's model has no decoder bias."""
        return self.zero_b_dec

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """M x + b."""
        return x @ self.W_enc + self.bias

    def reconstruction_error(self, x, x_hat):
        """The mean squared error over coordinates."""
        return (x - x_hat).pow(2).mean()

    def l1_penalty(self, step: L1Step, n: int) -> torch.Tensor:
        """||c||_1, mean over rows (the codes are ReLU outputs: their sum)."""
        return (step.codes if step.vals is None else step.vals).sum() / n

    @torch.no_grad()
    def load_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        """M from W_dec, b from b_enc (W_enc must be W_dec^T and b_dec zero for a tied model)."""
        self.M.copy_(tensors["W_dec"])
        self.bias.copy_(tensors["b_enc"])

    def init_b_dec(self, value: torch.Tensor) -> None:
        """The tied model has no decoder bias."""

    @torch.no_grad()
    def resample_directions(self, x, errors, rows):
        """The drawn rows' reconstruction errors less the batch's median error (per coordinate), normalised.

        Not the inputs: with no decoder bias to subtract, every input lies near the stream's mean direction, and so
        would every resampled latent (on gemma3-270m's block 9: nearest-twin cosine 0.986, one row firing all 1,458
        of them). What the dictionary misses is what a new latent should learn; the error all rows share is taken out
        as well, by the median so that one outlying row cannot set it (bench/diag_tied_resample.py measures this).
        """
        return torch.nn.functional.normalize((errors - errors.median(0).values)[rows], dim=-1)

    @torch.no_grad()
    def resample_latents(self, index, directions, x, enc_norm):
        """Direction and bias: the bias makes it fire on the ``TIED_FIRING`` of the batch most aligned with it.

        One matrix at unit norm and no decoder bias: a resampled latent could not be made quiet by a small encoder
        (on a residual stream with a large mean direction it would fire on every input and the run would diverge).
        """
        self.M[index] = directions
        self.bias[index] = quiet_bias(x, directions)
        return [(self.M, 0), (self.bias, 0)]


def quiet_bias(x: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """(n_dead,) biases under which each direction fires on the top ``TIED_FIRING`` of the rows of x (n, d)."""
    proj = x @ directions.T  # (n, n_dead)
    k = max(1, proj.shape[0] - int(TIED_FIRING * proj.shape[0]))
    return -proj.kthvalue(k, dim=0).values
