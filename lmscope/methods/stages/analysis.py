"""Stages of inference (Lad, Gurnee & Tegmark 2024) as one analysis with one result: :func:`stages`.

Layer lesions, lens curves, attention locality, prediction / suppression neurons and MLP output norms. The lens
curves read each block's output through the readout the config names (the model's tuned lens when one is in the
store and ``readout`` is auto; the result says which). Lesions (delete block l, swap blocks l and l+1) are
measured against the unmodified model on a held-out sample of a packaged corpus: KL(P_orig || P_lesioned),
relative top-1 accuracy on the next token, and the entropy change, averaged over next-token positions. Every
layer below a lesion is identical to the clean run, so each lesioned pass starts from the clean residual stream
cached under it (:func:`lmscope.model.surgery.start_after`): the sweep runs about half the blocks of the naive 2L
full passes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from lmscope.data.activations import corpus_batches
from lmscope.io import Result
from lmscope.methods.stages.config import MODES, StagesConfig
from lmscope.methods.stages.lesion import lesion_sweep
from lmscope.methods.stages.metrics import Reference, Sums, compare, local_mass, next_logits
from lmscope.methods.stages.neurons import neuron_vocab_moments, top_neurons
from lmscope.model.hooks import capture
from lmscope.model.lm import LM
from lmscope.model.readout import LOGIT, Readout, resolve_readout
from lmscope.model.sites import Site
from lmscope.progress import tqdm

log = logging.getLogger(__name__)


@dataclass
class StagesResult(Result):
    """Every stages measure of one model; per-layer tensors are indexed by block."""

    model: str
    n_layers: int
    tokens: int  # next-token positions measured
    base_accuracy: float  # top-1 next-token accuracy of the unmodified model
    lesion: dict[str, torch.Tensor]  # "<mode>_<metric>" -> (n_layers,) (swap: n_layers - 1)
    lens_kl: torch.Tensor  # (n_layers,) KL(P_final || P_lens(l)), through ``readout``
    lens_entropy: torch.Tensor  # (n_layers,)
    locality: torch.Tensor  # (n_layers, n_heads) attention mass on the previous locality_window tokens
    mlp_norm: torch.Tensor  # (n_layers,) mean |m^l| over tokens
    skew: torch.Tensor  # (n_layers, d_mlp) skewness of W_U w_out_i over the vocabulary
    kurtosis: torch.Tensor  # (n_layers, d_mlp) (Pearson; a Gaussian has 3)
    top_neurons: list[dict]  # {"class", "layer", "neuron", "skew", "kurtosis", "tokens"}
    config: StagesConfig = field(default_factory=StagesConfig)
    readout: dict = field(default_factory=LOGIT.describe)  # the lens the curves read through: kind, label, source

    def counts(self, kind: str) -> torch.Tensor:
        """Prediction (kind="prediction") or suppression neurons per layer: (n_layers,)."""
        high = self.kurtosis > self.config.kurtosis_threshold
        skew = self.skew if kind == "prediction" else -self.skew
        return (high & (skew > self.config.skew_threshold)).sum(1)

    def summary(self) -> dict:
        """Tokens, base accuracy, every lesion curve, the lens KL, neuron counts and the top neurons."""
        undefined = self.base_accuracy <= 0  # no next token right: relative accuracy is not defined
        return {"model": self.model, "tokens": self.tokens, "base_accuracy": self.base_accuracy,
                **{k: None if undefined and k.endswith("_rel_acc") else v.tolist() for k, v in self.lesion.items()},
                "notes": ["the unmodified model predicts no next token of this text: relative accuracies are "
                          "undefined (null)"] if undefined else [],
                "lens_readout": self.readout.get("label"), "lens_kl": self.lens_kl.tolist(),
                "prediction_neurons": self.counts("prediction").tolist(),
                "suppression_neurons": self.counts("suppression").tolist(), "top_neurons": self.top_neurons}

    @property
    def depth(self) -> torch.Tensor:
        """Relative depth of every block, 0 (first) .. 1 (last)."""
        return torch.arange(self.n_layers) / max(1, self.n_layers - 1)


@torch.no_grad()
def measure_batch(lm: LM, ids: torch.Tensor, config: StagesConfig, sums: Sums, readout: Readout = LOGIT) -> None:
    """All per-token measures of one batch of token ids (batch, pos); the lens reads through ``readout``."""
    sites = lm.sites("resid_post") + lm.sites("mlp_out") + lm.sites("attn_pattern")
    with lm.hooks(*(capture(s) for s in sites)) as cache:
        ref = Reference.of(next_logits(lm, ids))
    targets = ids[:, 1:]
    resid = {layer: cache[Site(layer, "resid_post")] for layer in range(lm.n_layers)}
    sums.n += targets.numel()
    sums.add("correct", (ref.p.argmax(-1) == targets).sum())
    lens = torch.zeros(lm.n_layers, 2, dtype=torch.float64)
    for layer in range(lm.n_layers):
        kl, _, d_entropy = compare(ref, readout.logits(lm, resid[layer][:, :-1], layer + 1), targets)
        lens[layer] = torch.stack([kl, d_entropy + ref.entropy.sum()]).double().cpu()
    sums.add("lens", lens)
    sums.add("mlp_norm", torch.stack([cache[Site(layer, "mlp_out")][:, :-1].norm(dim=-1).sum()
                                      for layer in range(lm.n_layers)]))
    sums.add("locality", torch.stack([local_mass(cache[Site(layer, "attn_pattern")], config.locality_window)
                                      for layer in range(lm.n_layers)]))
    lesion_sweep(lm, ids, resid, ref, targets, sums)


def stages(lm: LM, config: StagesConfig | None = None) -> StagesResult:
    """Run every stages measure on ``config.tokens`` held-out tokens of ``config.corpus``."""
    config = config or StagesConfig()
    lm.check_length(config.seq_len)
    sums = Sums()
    readout = resolve_readout(lm, config.readout)
    log.info("stages of %s: the lens curves read through the %s", lm.name, readout.label)
    batches = corpus_batches(lm.tokenizer, config)
    n_batches = -(-config.tokens // (config.seq_len * config.batch_size))
    for ids in tqdm(batches, desc=f"stages {lm.name}", unit="batch", total=n_batches):
        measure_batch(lm, ids.to(lm.device), config, sums, readout)
    moments = [neuron_vocab_moments(lm, layer)
               for layer in tqdm(range(lm.n_layers), desc=f"neurons {lm.name}", unit="layer")]
    skew, kurt = torch.stack([m[0] for m in moments]), torch.stack([m[1] for m in moments])
    base = float(sums.mean("correct"))
    lesion = {}
    for mode in MODES:
        rows = sums.mean(mode)  # (layers, 3): KL, accuracy, entropy change
        rel = rows[:, 1] / base if base > 0 else torch.full_like(rows[:, 1], float("nan"))
        lesion.update({f"{mode}_kl": rows[:, 0], f"{mode}_rel_acc": rel,
                       f"{mode}_d_entropy": rows[:, 2]})
    lens = sums.mean("lens")
    return StagesResult(
        model=lm.name, n_layers=lm.n_layers, tokens=sums.n, base_accuracy=base, lesion=lesion,
        lens_kl=lens[:, 0], lens_entropy=lens[:, 1], locality=sums.mean("locality"), mlp_norm=sums.mean("mlp_norm"),
        skew=skew, kurtosis=kurt, top_neurons=top_neurons(lm, skew, kurt, config), config=config,
        readout=readout.describe())
