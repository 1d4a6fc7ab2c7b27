"""How good per-layer transcoders are as the replacement model: each layer's FVE and L0, the loss with all in place.

Per layer, on held-out text: FVE = 1 - sum |y - y_hat|^2 / sum |y - mean(y)|^2 of the MLP output y and the
transcoder's prediction y_hat from the clean MLP input, and L0 (mean active features). The replacement model runs
every covered layer's MLP output as its transcoder's prediction from that layer's input in the same run (errors
compound as they do in an attribution graph's replacement before its error nodes are added); CE recovered =
(CE_zero - CE_replaced) / (CE_zero - CE_orig) with CE_zero every covered MLP's output zero-ablated. Left-out
positions (special tokens, each row's first, attention sinks) keep their own MLP outputs, as in the SAE evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmscope import config as check
from lmscope.data.activations import CorpusConfig, activation_batches, text_field
from lmscope.errors import DataError, InputError
from lmscope.io import Result
from lmscope.methods.graphs.transcoders import LayerTranscoder
from lmscope.model.hooks import Op, apply
from lmscope.model.lm import LM
from lmscope.model.sites import Site


@dataclass
class ReplacementEvalConfig(CorpusConfig):
    """Held-out text for the evaluation (:class:`CorpusConfig`)."""

    tokens: int = text_field(16_384, "evaluation tokens")

    def __post_init__(self) -> None:
        super().__post_init__()
        check.at_least(self, 1, "tokens")


@dataclass
class ReplacementEval(Result):
    """Per-layer FVE and L0 of the transcoders, and the loss of the model with all of them in place."""

    model: str
    layers: list[int]
    fve: list[float]  # per layer in ``layers``
    l0: list[float]
    tokens: int  # measured positions
    ce_orig: float
    ce_replaced: float
    ce_zero: float
    source: str = ""  # where the transcoders came from
    config: ReplacementEvalConfig = field(default_factory=ReplacementEvalConfig)

    @property
    def ce_recovered(self) -> float:
        """(CE_zero - CE_replaced) / (CE_zero - CE_orig)."""
        return (self.ce_zero - self.ce_replaced) / (self.ce_zero - self.ce_orig)

    def summary(self) -> dict:
        """The losses, CE recovered and each layer's FVE and L0."""
        return {"model": self.model, "source": self.source, "tokens": self.tokens, "ce_orig": self.ce_orig,
                "ce_replaced": self.ce_replaced, "ce_zero": self.ce_zero, "ce_recovered": self.ce_recovered,
                "mean_fve": sum(self.fve) / len(self.fve),
                "layers": [{"layer": la, "fve": f, "l0": z} for la, f, z in zip(self.layers, self.fve, self.l0)]}


def _replaced(transcoders: dict[int, LayerTranscoder], keep: torch.Tensor) -> list[Op]:
    """Every covered MLP output as its transcoder's prediction from the live MLP input, at kept positions.

    A transcoder that runs the MLP module itself (the exact MLP of the tests) passes through these hooks: inside
    its own prediction a layer's hooks leave the values alone.
    """
    ops, seen, busy = [], {}, set()
    for layer, tc in sorted(transcoders.items()):
        def read(x, layer=layer):
            if layer not in busy:
                seen[layer] = x
            return x

        def write(y, layer=layer, tc=tc):
            if layer in busy:
                return y
            busy.add(layer)
            try:
                return torch.where(keep[..., None], tc.output(seen[layer].float()).to(y.dtype), y)
            finally:
                busy.discard(layer)

        ops += [apply(Site(layer, "mlp_in"), read), apply(Site(layer, "mlp_out"), write)]
    return ops


class _Sums:
    """Running float64 sums per layer: squared error, squared norm, the sum of y, active features; and the losses."""

    def __init__(self, n_layers: int, d: int):
        self.err, self.sq = torch.zeros(n_layers, dtype=torch.float64), torch.zeros(n_layers, dtype=torch.float64)
        self.y = torch.zeros(n_layers, d, dtype=torch.float64)
        self.active = torch.zeros(n_layers, dtype=torch.float64)
        self.count, self.ce, self.ce_tokens = 0, torch.zeros(3, dtype=torch.float64), 0

    def add(self, i: int, tc: LayerTranscoder, x: torch.Tensor, y: torch.Tensor) -> None:
        """Layer i's kept positions: x the MLP input, y its output (n, d)."""
        x, y = x.float(), y.double()
        codes = tc.encode(x)  # (n, features), once for both the prediction and L0
        self.err[i] += float((y - tc.decode(codes, x).double()).pow(2).sum())
        self.sq[i] += float(y.pow(2).sum())
        self.y[i] += y.sum(0).cpu()
        self.active[i] += float((codes > 0).sum())

    def fve(self) -> torch.Tensor:
        """(n_layers,) 1 - error / variance around each layer's mean."""
        variance = self.sq - self.y.pow(2).sum(-1) / self.count
        return 1 - self.err / variance.clamp_min(1e-12)


@torch.no_grad()
def evaluate_replacement(lm: LM, transcoders: dict[int, LayerTranscoder], config: ReplacementEvalConfig | None = None,
                         source: str = "") -> ReplacementEval:
    """Each transcoder's FVE and L0, and CE recovered by the replacement model, on held-out text."""
    config = config or ReplacementEvalConfig()
    if not transcoders:
        raise InputError("no transcoders to evaluate")
    layers = sorted(transcoders)
    sites = [Site(la, kind) for la in layers for kind in ("mlp_in", "mlp_out")]
    sums = _Sums(len(layers), lm.d_model)
    for batch in activation_batches(lm, sites, config):
        for i, la in enumerate(layers):
            sums.add(i, transcoders[la], batch.kept(Site(la, "mlp_in")), batch.kept(Site(la, "mlp_out")))
        sums.count += batch.kept(sites[0]).shape[0]
        keep = batch.keep if batch.keep is not None else torch.ones_like(batch.ids, dtype=torch.bool)
        zeroed = [apply(Site(la, "mlp_out"), lambda y, keep=keep: torch.where(keep[..., None], 0.0, y))
                  for la in layers]
        sums.ce += torch.tensor([float(lm.next_token_loss(batch.ids, *ops))
                                 for ops in ([], _replaced(transcoders, keep), zeroed)], dtype=torch.float64)
        sums.ce_tokens += batch.ids[:, 1:].numel()
    if sums.count == 0:
        raise DataError(f"no evaluation tokens: every position of corpus {config.corpus} was left out (special "
                        "tokens, each row's first, attention sinks); give more text or longer rows (--seq-len)")
    ce_orig, ce_replaced, ce_zero = (sums.ce / sums.ce_tokens).tolist()
    return ReplacementEval(model=lm.name, layers=layers, fve=sums.fve().tolist(),
                           l0=(sums.active / sums.count).tolist(), tokens=sums.count, ce_orig=ce_orig,
                           ce_replaced=ce_replaced, ce_zero=ce_zero, source=source, config=config)
