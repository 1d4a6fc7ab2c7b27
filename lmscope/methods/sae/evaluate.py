"""How good an SAE is on held-out text: reconstruction, sparsity, dead and dense latents, and the model's loss.

FVE = 1 - sum |x - x_hat|^2 / sum |x - mean(x)|^2 over the evaluation tokens (the mean over those tokens; peers
differ, so the definition travels with the result). CE recovered = (CE_zero - CE_sae) / (CE_zero - CE_orig), with
CE the mean next-token loss of the model, CE_sae with the site replaced by the reconstruction and CE_zero with the
site zero-ablated, at the same positions (special tokens, each row's first position and attention-sink positions
keep their own activations, as in training). A metric that is not finite is an error naming its cause (the model's
activations, the SAE's reconstruction, one of the three losses), never a NaN in the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from lmscope import config as check
from lmscope.data.activations import CorpusConfig, activation_batches, deepest_stop, text_field
from lmscope.errors import ArtifactError, DataError, InputError
from lmscope.io import Result
from lmscope.methods.sae.arch import SparseAutoencoder
from lmscope.methods.sae.artifacts import check_sae, check_target
from lmscope.methods.sae.harvest import first_rows
from lmscope.methods.sae.splice import splice, splice_transcoder
from lmscope.model.hooks import Op, apply
from lmscope.model.lm import LM
from lmscope.model.sites import Site
from lmscope.running import Mean

FVE_DEFINITION = "1 - sum|x - x_hat|^2 / sum|x - mean(x)|^2 over the evaluation tokens"


@dataclass
class EvalConfig(CorpusConfig):
    """Held-out text for the evaluation (:class:`CorpusConfig`: left-out positions are neither measured nor spliced)."""

    tokens: int = text_field(65_536, "evaluation tokens")
    dense_threshold: float = field(default=0.1, metadata={"help": "a latent firing on more tokens than this is dense"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check.at_least(self, 1, "tokens")


@dataclass
class SaeEvalResult(Result):
    """Metrics of one SAE at one site, and the firing density of every latent."""

    model: str
    site: str  # where the reconstruction (a transcoder's prediction) is measured and spliced
    architecture: str
    d_sae: int
    tokens: int
    mse: float  # mean over tokens of |x - x_hat|^2
    fve: float
    l0: float  # mean active latents per token
    dead: float  # fraction of latents that never fired
    dense: float  # fraction firing on more than dense_threshold of the tokens
    ce_orig: float
    ce_sae: float
    ce_zero: float
    density: torch.Tensor  # (d_sae,) fraction of tokens on which each latent fires
    fve_definition: str = FVE_DEFINITION
    config: EvalConfig = field(default_factory=EvalConfig)
    reads: str = ""  # where it reads: the site itself, or a transcoder's input (mlp_in)

    @property
    def ce_recovered(self) -> float:
        """(CE_zero - CE_sae) / (CE_zero - CE_orig)."""
        return (self.ce_zero - self.ce_sae) / (self.ce_zero - self.ce_orig)

    @property
    def delta_lm_loss(self) -> float:
        """CE_sae - CE_orig."""
        return self.ce_sae - self.ce_orig

    def summary(self) -> dict:
        """Every scalar metric, CE recovered and the loss increase included."""
        keys = ("model", "site", "reads", "architecture", "d_sae", "tokens", "mse", "fve", "l0", "dead", "dense",
                "ce_orig", "ce_sae", "ce_zero", "fve_definition")
        return {**{k: getattr(self, k) for k in keys}, "ce_recovered": self.ce_recovered,
                "delta_lm_loss": self.delta_lm_loss}


class _Totals:
    """Running sums of the reconstruction metrics (float64) and of the three losses."""

    def __init__(self, d_in: int, d_sae: int):
        self.x, self.sq, self.err = Mean((d_in,)), 0.0, 0.0
        self.active, self.fired = 0.0, torch.zeros(d_sae, dtype=torch.float64)
        self.ce, self.ce_tokens = torch.zeros(3, dtype=torch.float64), 0

    def add(self, x: torch.Tensor, x_hat: torch.Tensor, codes: torch.Tensor) -> None:
        self.x.update(x)
        self.sq += float(x.double().pow(2).sum())
        self.err += float((x - x_hat).double().pow(2).sum())
        firing = (codes > 0).double()
        self.active += float(firing.sum())
        self.fired += firing.sum(0).cpu()


def _where(site: Site, keep: torch.Tensor, fn) -> Op:
    """Apply ``fn`` at the kept (non-special) positions only; keep: (batch, pos) bool."""
    return apply(site, lambda x: torch.where(keep[..., None], fn(x), x))


def _losses(lm: LM, sae: SparseAutoencoder, site: Site, ids: torch.Tensor, keep: torch.Tensor,
            target: Site | None = None) -> torch.Tensor:
    """Summed next-token loss of the batch: (orig, SAE spliced, site zeroed), float64 on CPU.

    A transcoder's prediction replaces its target (the MLP's output), and the target is what is zero-ablated.
    """
    if target is None:
        spliced = [_where(site, keep, splice(sae, site).fn)]
    else:
        read, write = splice_transcoder(sae, site, target)
        spliced = [read, _where(target, keep, write.fn)]
    zeroed = _where(target or site, keep, torch.zeros_like)
    return torch.stack([lm.next_token_loss(ids, *ops).double().cpu() for ops in ([], spliced, [zeroed])])


def _finite(lm: LM, sae: SparseAutoencoder, site: Site, x: torch.Tensor, x_hat: torch.Tensor,
            losses: torch.Tensor) -> None:
    """Stop at the first batch with a value that is not finite, naming what made it."""
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"the activations of {lm.name} at {site} are not finite on the evaluation text (dtype "
                         f"{lm.dtype}); the model overflows there: try --dtype float32")
    if not bool(torch.isfinite(x_hat).all()):
        raise ArtifactError(f"the SAE's reconstruction at {site} is not finite although its weights are: its "
                            f"weights are too large for {lm.name}'s activations (an SAE of another model or site?)")
    names = ("the model's own loss", "the loss with the SAE spliced in", f"the loss with {site} zero-ablated")
    for name, value in zip(names, losses.tolist()):
        if not math.isfinite(value):
            raise InputError(f"{name} is not finite on the evaluation text ({lm.name} at {site}, dtype {lm.dtype})")


@torch.no_grad()
def evaluate_sae(lm: LM, sae: SparseAutoencoder, site: Site, config: EvalConfig | None = None) -> SaeEvalResult:
    """Reconstruction, sparsity and CE metrics of ``sae`` at ``site`` on held-out tokens.

    Every metric is finite, or this is one error naming which input made it not (nothing is returned).
    """
    config = config or EvalConfig()
    site = check_sae(sae, lm, site, force=True)  # the caller chose the site and model; the shapes must hold
    target = check_target(sae, lm)
    sae = sae.to(lm.device).eval()  # the SAE follows the model
    lm.check_length(config.seq_len)
    first_rows(lm.tokenizer, config)  # an empty or binary corpus: one line before any pass
    totals = _Totals(sae.d_out, sae.d_sae)
    sites = [site] + ([target] if target is not None else [])
    for batch in activation_batches(lm, sites, config, stop_after=deepest_stop(sites)):
        x = batch.kept(site)  # (n, d_in)
        y = batch.kept(target) if target is not None else x  # (n, d_out): what it reconstructs or predicts
        codes = sae.encode(x)
        y_hat = sae.output(x)
        keep = batch.keep if batch.keep is not None else torch.ones_like(batch.ids, dtype=torch.bool)
        losses = _losses(lm, sae, site, batch.ids, keep, target)
        _finite(lm, sae, target or site, y, y_hat, losses)
        totals.add(y, y_hat, codes)
        totals.ce += losses
        totals.ce_tokens += batch.ids[:, 1:].numel()
    return _result(lm, sae, target or site, totals, config, site if target is not None else None)


def _result(lm: LM, sae: SparseAutoencoder, site: Site, totals: _Totals, config: EvalConfig,
            reads: Site | None = None) -> SaeEvalResult:
    n = totals.x.count
    if n == 0:
        raise DataError(f"no evaluation tokens: every position of corpus {config.corpus} was left out (special "
                        "tokens, each row's first, attention sinks); give more text or longer rows (--seq-len)")
    variance = totals.sq - n * float(totals.x.mean().double().pow(2).sum())
    if not variance > 0:
        raise InputError(f"the activations of {lm.name} at {site} do not vary over the {n} evaluation tokens: the "
                         "fraction of variance explained is undefined there")
    density = (totals.fired / n).float()
    ce_orig, ce_sae, ce_zero = (totals.ce / max(totals.ce_tokens, 1)).tolist()
    if ce_zero == ce_orig:
        raise InputError(f"zero-ablating {site} leaves {lm.name}'s loss unchanged ({ce_orig:.4f}): CE recovered is "
                         "undefined there")
    return SaeEvalResult(model=lm.name, site=str(site), reads=str(reads or site),
                         architecture=("skip " if sae.cfg.skip else "") + sae.name + (" transcoder" if reads else ""),
                         d_sae=sae.d_sae, tokens=totals.x.count,
                         mse=totals.err / n, fve=1 - totals.err / max(variance, 1e-12), l0=totals.active / n,
                         dead=float((density == 0).float().mean()),
                         dense=float((density > config.dense_threshold).float().mean()),
                         ce_orig=ce_orig, ce_sae=ce_sae, ce_zero=ce_zero, density=density, config=config)
