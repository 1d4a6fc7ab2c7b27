"""The logit and the tuned lens side by side on held-out text, layer by layer (Belrose et al. 2023, Fig. 1 / 4).

For every residual stream h^0 .. h^L and every readout: the mean KL(P_final || P_readout) over the kept positions
(nats) and the top-1 agreement (the readout's most likely token is the model's). The last row is the model's own
output (KL 0, agreement 1 for every readout): a check, not a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmscope.data.activations import activation_batches
from lmscope.io import Result
from lmscope.methods.lens.config import CompareConfig
from lmscope.model.lm import LM
from lmscope.model.readout import LOGIT, Readout
from lmscope.model.sites import Site
from lmscope.progress import tqdm

CHUNK = 256  # positions unembedded at a time


@dataclass
class LensComparison(Result):
    """KL to the final distribution and top-1 agreement of each readout at every residual stream."""

    model: str
    positions: int  # held-out positions measured
    readouts: list[str]  # labels, e.g. ["logit lens", "tuned lens"]
    layer_labels: list[str]  # (n_rows,) "embed", "0", ..., str(n_layers - 1)
    kl: torch.Tensor  # (n_readouts, n_rows) mean KL(P_final || P_readout), nats
    top1: torch.Tensor  # (n_readouts, n_rows) fraction of positions whose top-1 token is the model's
    lens: dict = field(default_factory=dict)  # the tuned lens read: source, tokens, steps
    config: CompareConfig = field(default_factory=CompareConfig)

    def worse_rows(self, a: int = 1, b: int = 0) -> list[str]:
        """Rows but the last where readout ``a`` has a KL no lower than readout ``b``'s (the tuned lens' misses)."""
        return [label for i, label in enumerate(self.layer_labels[:-1]) if float(self.kl[a, i]) >= float(self.kl[b, i])]

    def summary(self) -> dict:
        """Per row: each readout's KL and agreement; the rows where the second readout does not beat the first."""
        rows = [{"layer": label, **{f"kl_{r}": round(float(self.kl[j, i]), 4) for j, r in enumerate(self.readouts)},
                 **{f"top1_{r}": round(float(self.top1[j, i]), 4) for j, r in enumerate(self.readouts)}}
                for i, label in enumerate(self.layer_labels)]
        out = {"model": self.model, "positions": self.positions, "readouts": self.readouts, "lens": self.lens,
               "layers": rows,
               "mean_kl": {r: round(float(self.kl[j, :-1].mean()), 4) for j, r in enumerate(self.readouts)}}
        if len(self.readouts) > 1:
            out["not_better"] = self.worse_rows()
        return out


def _row_sums(logits: torch.Tensor, final_logp: torch.Tensor, final_p: torch.Tensor,
              final_top: torch.Tensor) -> torch.Tensor:
    """(sum of KL(final || this), top-1 agreements) over the positions of one chunk. logits: (pos, vocab)."""
    logp = torch.log_softmax(logits.float(), -1)
    kl = (final_p * (final_logp - logp)).sum(-1).clamp_min(0)
    return torch.stack([kl.sum().double(), (logp.argmax(-1) == final_top).sum().double()])


@torch.no_grad()
def compare_lenses(lm: LM, readouts: list[Readout], config: CompareConfig | None = None) -> LensComparison:
    """Measure every readout at every residual stream on ``config.tokens`` held-out tokens."""
    config = config or CompareConfig()
    lm.check_length(config.seq_len)
    sites = [Site(0, "resid_pre"), *lm.sites("resid_post")]
    sums = torch.zeros(len(readouts), len(sites), 2, dtype=torch.float64)
    positions = 0
    n_batches = -(-config.tokens // (config.seq_len * config.batch_size))
    for batch in tqdm(activation_batches(lm, sites, config), desc=f"lenses {lm.name}", unit="batch",
                      total=n_batches):
        streams = [batch.kept(s).to(lm.dtype) for s in sites]  # (n, d) each
        for i in range(0, streams[0].shape[0], CHUNK):
            final_logp = torch.log_softmax(lm.unembed(streams[-1][i:i + CHUNK]).float(), -1)
            final_p, final_top = final_logp.exp(), final_logp.argmax(-1)  # once per chunk, for every row and readout
            for j, readout in enumerate(readouts):
                for row, h in enumerate(streams):
                    logits = readout.logits(lm, h[i:i + CHUNK], row)
                    sums[j, row] += _row_sums(logits, final_logp, final_p, final_top).cpu()
        positions += streams[0].shape[0]
    means = (sums / max(1, positions)).float()
    tuned = next((r for r in readouts if r is not LOGIT), None)
    return LensComparison(model=lm.name, positions=positions, readouts=[r.label for r in readouts],
                          layer_labels=["embed", *(str(i) for i in range(lm.n_layers))], kl=means[..., 0],
                          top1=means[..., 1], lens=tuned.describe() if tuned is not None else {}, config=config)
