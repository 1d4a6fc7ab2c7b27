"""A ground truth for dictionary learning that needs no model (after SAELens' SynthSAEBench).

Activations x = sum_i a_i d_i + b + noise are drawn from a known dictionary: ``n_features`` unit directions d_i in
``d`` dimensions (more features than dimensions: superposition), each firing with a Zipf-like probability
p_i proportional to (i + 1)^-alpha, scaled so that ``target_l0`` features fire per sample on average, with a
magnitude |N(1, magnitude_std)| when it fires. Some features fire together: groups of ``group_size`` whose firing
shares a Gaussian copula of correlation ``group_correlation``. Some are hierarchical: each of ``n_parents`` frequent
features has ``children`` features of which exactly one fires, with probability ``child_rate``, only when the parent
fires. A constant offset b (norm ``offset_norm``) and Gaussian noise of ``noise_std`` per coordinate are added.
Everything is drawn from ``seed``, so a table is rerun exactly.

:func:`recovery` scores a dictionary against the truth: the mean over true features of the largest cosine with a
learned decoder row (MCC), the fraction recovered above 0.9, and the precision and recall of each true feature's
best-matching latent's firing against the feature's own (over features that fire in the evaluation sample).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmscope import config as check
from lmscope.errors import ConfigError
from lmscope.methods.sae.arch import SparseAutoencoder


@dataclass
class SynthConfig:
    """The synthetic activations' dictionary and statistics (every field seeded and recorded with a result)."""

    d: int = field(default=576, metadata={"help": "activation width (smollm2-135m's d_model)"})
    n_features: int = field(default=4096, metadata={"help": "true features (more than d: superposition)"})
    target_l0: float = field(default=24.0, metadata={"help": "mean true features firing per sample"})
    zipf_exponent: float = field(default=0.5, metadata={"help": "firing probability ~ (rank + 1)^-exponent"})
    magnitude_std: float = field(default=0.5, metadata={"help": "a firing feature's magnitude is |N(1, std)|"})
    group_size: int = field(default=4, metadata={"help": "features per correlated group"})
    correlated_fraction: float = field(default=0.25, metadata={
        "help": "fraction of features in correlated groups", "min": 0, "max": 1})
    group_correlation: float = field(default=0.6, metadata={
        "help": "copula correlation inside a group", "min": 0, "max": 1})
    n_parents: int = field(default=64, metadata={"help": "hierarchical parents (the most frequent features)"})
    children: int = field(default=4, metadata={"help": "children per parent (exactly one fires with the parent)"})
    child_rate: float = field(default=0.5, metadata={
        "help": "probability that a firing parent fires a child", "min": 0, "max": 1})
    offset_norm: float = field(default=1.0, metadata={"help": "norm of the constant offset b"})
    noise_std: float = field(default=0.05, metadata={"help": "Gaussian noise per coordinate"})
    seed: int = field(default=0, metadata={"help": "seed of the dictionary and of every sample"})

    def __post_init__(self) -> None:
        check.at_least(self, 1, "d", "n_features", "group_size", "children")
        check.at_least(self, 0, "zipf_exponent", "magnitude_std", "n_parents", "offset_norm", "noise_std")
        check.positive(self, "target_l0")
        check.bounds(self)  # the fractions in [0, 1]
        if self.target_l0 > self.n_features:
            raise ConfigError(f"target-l0 {self.target_l0:g} is more than the {self.n_features} features")


DICTIONARY_SEED = 0x5EED_D1C7  # offset of the dictionary's generator: an SAE initialised from seed 0 must not be it


class SyntheticActivations:
    """The generator: the true dictionary, every feature's firing probability, and samples of (x, a)."""

    def __init__(self, cfg: SynthConfig | None = None):
        self.cfg = cfg = cfg or SynthConfig()
        gen = torch.Generator().manual_seed(DICTIONARY_SEED + cfg.seed)  # never the stream a model's init draws from
        n = cfg.n_features
        self.dictionary = torch.nn.functional.normalize(torch.randn(n, cfg.d, generator=gen), dim=-1)  # (n, d)
        self.offset = cfg.offset_norm * torch.nn.functional.normalize(torch.randn(cfg.d, generator=gen), dim=0)
        ranks = torch.randperm(n, generator=gen).float()  # frequency rank of each feature, in a random order
        weight = (ranks + 1).pow(-cfg.zipf_exponent)
        self.parent = torch.full((n,), -1)  # (n,) the parent of a child feature, -1 for the others
        by_rank = ranks.argsort()
        n_children = min(cfg.n_parents * cfg.children, max(0, n - cfg.n_parents))
        parents, kids = by_rank[:cfg.n_parents], by_rank[n - n_children:]  # the most and the least frequent
        self.parent[kids] = parents.repeat_interleave(cfg.children)[:n_children]
        free = torch.ones(n, dtype=torch.bool)
        free[kids] = False
        self.p = self._probabilities(weight, free, n_children)  # (n,) marginal firing probability
        free_idx = free.nonzero().flatten()
        n_grouped = int(cfg.correlated_fraction * len(free_idx)) // cfg.group_size * cfg.group_size
        grouped = free_idx[torch.randperm(len(free_idx), generator=gen)[:n_grouped]]
        self.group = torch.full((n,), -1)
        self.group[grouped] = torch.arange(n_grouped) // cfg.group_size
        self.n_groups = n_grouped // cfg.group_size

    def _probabilities(self, weight: torch.Tensor, free: torch.Tensor, n_children: int) -> torch.Tensor:
        """Marginal firing probabilities: the free features' scaled to target_l0 (children's follow their parent)."""
        cfg, p = self.cfg, torch.zeros(len(weight))
        child_share = 0.0
        for _ in range(50):  # the children's share of L0 depends on their parents': fixed point
            scale = (cfg.target_l0 - child_share) / float(weight[free].sum())
            p[free] = (weight[free] * scale).clamp(max=1.0)
            kids = (self.parent >= 0).nonzero().flatten()
            p[kids] = p[self.parent[kids]] * cfg.child_rate / cfg.children
            child_share = float(p[kids].sum())
        return p

    def sample(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(x (n, d), a (n, n_features)): activations and the true features' magnitudes (0 where silent)."""
        cfg = self.cfg
        z = torch.randn(n, cfg.n_features, generator=gen)
        if self.n_groups:  # a Gaussian copula: grouped features share a component
            shared = torch.randn(n, self.n_groups, generator=gen)
            g = self.group >= 0
            rho = cfg.group_correlation
            z[:, g] = rho ** 0.5 * shared[:, self.group[g]] + (1 - rho) ** 0.5 * z[:, g]
        fires = z < torch.special.ndtri(self.p.clamp(1e-12, 1 - 1e-7))  # P(fire) = p for every free feature
        kids = (self.parent >= 0).nonzero().flatten()
        if len(kids):
            fires[:, kids] = self._children(fires, kids, n, gen)
        rows, cols = fires.nonzero(as_tuple=True)
        vals = (1 + cfg.magnitude_std * torch.randn(len(rows), generator=gen)).abs()  # |N(1, std)| where firing
        a = torch.zeros(n, cfg.n_features).index_put_((rows, cols), vals)
        x = torch.zeros(n, cfg.d).index_add_(0, rows, vals[:, None] * self.dictionary[cols])
        x += self.offset + cfg.noise_std * torch.randn(n, cfg.d, generator=gen)
        return x, a

    def _children(self, fires: torch.Tensor, kids: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
        """Which children fire: with probability child_rate, exactly one of a firing parent's children."""
        cfg = self.cfg
        parents = self.parent[kids].unique()
        out = torch.zeros(n, len(kids), dtype=torch.bool)
        for parent in parents.tolist():
            mine = (self.parent[kids] == parent).nonzero().flatten()  # columns of this parent's children
            on = fires[:, parent] & (torch.rand(n, generator=gen) < cfg.child_rate)
            pick = torch.randint(len(mine), (n,), generator=gen)
            out[on.nonzero().flatten(), mine[pick[on]]] = True
        return out

    def batches(self, n_batches: int, batch: int, seed: int = 1):
        """``n_batches`` batches of ``batch`` activations (the x only), from their own seed."""
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + seed)
        for _ in range(n_batches):
            yield self.sample(batch, gen)[0]


@torch.no_grad()
def recovery(sae: SparseAutoencoder, synth: SyntheticActivations, n: int = 16_384, seed: int = 2) -> dict:
    """How well ``sae`` recovers the true dictionary and its firing, on ``n`` fresh samples.

    mcc: mean over true features of the largest |cosine| with a decoder row; recovered: the fraction above 0.9;
    precision / recall: of each true feature's best latent firing against the feature's own firing (means over the
    true features that fire in the sample); fve, l0 and dead (latents that never fire) of the dictionary itself.
    """
    gen = torch.Generator().manual_seed(synth.cfg.seed * 1_000_003 + seed)
    x, a = synth.sample(n, gen)
    sae = sae.eval()
    codes = sae.encode(x)
    x_hat = sae.output(x)
    learned = torch.nn.functional.normalize(sae.W_dec.detach().float(), dim=-1)  # (d_sae, d)
    cos = synth.dictionary @ learned.T  # (n_features, d_sae)
    best, match = cos.max(dim=1)
    fired, on = a > 0, codes > 0
    seen = fired.any(0)
    hits = (fired & on[:, match]).sum(0).float()  # (n_features,) samples where both fire
    recall = hits / fired.sum(0).clamp_min(1)
    precision = hits / on[:, match].sum(0).clamp_min(1)
    latent_seen = on[:, match].any(0)
    fve = 1 - float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    return {"mcc": float(best.mean()), "recovered": float((best > 0.9).float().mean()),
            "precision": float(precision[seen & latent_seen].mean()) if bool((seen & latent_seen).any()) else 0.0,
            "recall": float(recall[seen].mean()), "fve": fve, "l0": float(on.sum(-1).float().mean()),
            "dead": float((~on.any(0)).float().mean()), "true_l0": float(fired.sum(-1).float().mean())}


__all__ = ["SynthConfig", "SyntheticActivations", "recovery"]
