"""What each feature reads: top-activating contexts, examples from activation quantiles, density, logit effects.

One pass over held-out text keeps every non-zero feature activation (sparse: position, feature, value), so any
feature's examples come from the same pass with no per-feature forward. The result holds, per selected feature,
its examples and statistics; :mod:`lmscope.viz.features` draws them as self-contained HTML pages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmscope import config as check
from lmscope.data.activations import CorpusConfig, activation_batches, text_field
from lmscope.errors import ArtifactError, ConfigError, DataError, InputError
from lmscope.io import Result
from lmscope.methods.sae.arch import SparseAutoencoder
from lmscope.methods.sae.artifacts import check_sae
from lmscope.methods.sae.harvest import first_rows
from lmscope.model.lm import LM
from lmscope.model.sites import Site


@dataclass
class FeatureConfig(CorpusConfig):
    """Which features, on what text, and how many examples of each.

    The text is a :class:`CorpusConfig`: left-out positions never count as activating.
    """

    tokens: int = text_field(131_072, "tokens read")
    seq_len: int = text_field(64, "tokens per row")
    features: tuple[int, ...] = field(default=(), metadata={
        "help": "features to show, ids in 0..d_sae-1 (default: sampled)", "min": 0})
    n_features: int = field(default=24, metadata={"help": "features sampled among those that fire, if none given"})
    top_examples: int = field(default=12, metadata={"help": "top-activating contexts per feature"})
    quantile_bins: int = field(default=4, metadata={"help": "activation quantile bins with examples"})
    per_bin: int = field(default=3, metadata={"help": "examples per quantile bin"})
    left: int = field(default=16, metadata={"help": "tokens of context before the activating token"})
    right: int = field(default=4, metadata={"help": "tokens of context after it"})
    logit_tokens: int = field(default=10, metadata={"help": "top and bottom logit-effect tokens"})
    sample_seed: int = field(default=0, metadata={"help": "seed of the feature sample and the quantile examples"})

    def __post_init__(self) -> None:
        try:
            self.features = tuple(int(f) for f in self.features)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"features must be whole numbers (feature ids), got {self.features!r}") from err
        super().__post_init__()
        check.at_least(self, 1, "tokens", "n_features", "top_examples", "logit_tokens")
        check.at_least(self, 0, "quantile_bins", "per_bin", "left", "right")
        check.bounds(self)

    def check_features(self, d_sae: int) -> None:
        """Every chosen feature id is one of the SAE's: 0..d_sae-1 (one ConfigError naming the first that is not)."""
        bad = [f for f in self.features if not 0 <= f < d_sae]
        if bad:
            raise ConfigError(f"features must be in 0..{d_sae - 1} (the SAE has d_sae {d_sae} features), got "
                              f"{bad[0]}")


@dataclass
class FeatureExamples(Result):
    """Examples and statistics of the selected features of one SAE at one site."""

    model: str
    site: str
    d_sae: int
    tokens: int  # positions that count (specials and, with drop_first, each row's first left out)
    density: torch.Tensor  # (d_sae,) fraction of positions where each feature fires
    pages: list[dict]  # one per selected feature: see :func:`_page`
    config: FeatureConfig = field(default_factory=FeatureConfig)

    def summary(self) -> dict:
        """Per selected feature: density, maximum activation and its top context's token."""
        return {"model": self.model, "site": self.site, "d_sae": self.d_sae, "tokens": self.tokens,
                "dead": float((self.density == 0).float().mean()),
                "features": [{k: p[k] for k in ("feature", "density", "max", "top_token")} for p in self.pages]}


@dataclass
class _Sparse:
    """Every non-zero activation of one pass: flat position, feature, value; and the token ids."""

    ids: torch.Tensor  # (rows, seq_len)
    position: torch.Tensor  # (nnz,) row * seq_len + pos
    feature: torch.Tensor  # (nnz,)
    value: torch.Tensor  # (nnz,)
    kept: int  # positions that count (not special, not a row's first when drop_first)


@torch.no_grad()
def _collect(lm: LM, sae: SparseAutoencoder, site: Site, cfg: FeatureConfig) -> _Sparse:
    rows, pos, feat, val = [], [], [], []
    offset = kept = 0
    for batch in activation_batches(lm, [site], cfg, stop_after=site):
        ids = batch.ids.cpu()
        x = batch.acts[site].float()
        codes = sae.encode(x)  # (batch, seq_len, d_sae)
        if not bool(torch.isfinite(codes).all()):
            raise (InputError(f"the activations of {lm.name} at {site} are not finite on this text (dtype "
                              f"{lm.dtype}); try --dtype float32") if not bool(torch.isfinite(x).all()) else
                   ArtifactError(f"the SAE's features at {site} are not finite although its weights are: its weights "
                                 f"are too large for {lm.name}'s activations (an SAE of another model or site?)"))
        keep = batch.keep if batch.keep is not None else torch.ones_like(batch.ids, dtype=torch.bool)
        codes = (codes * keep[..., None]).flatten(0, 1)  # (batch * seq_len, d_sae): left-out positions never fire
        kept += int(keep.sum())
        p, f = codes.nonzero(as_tuple=True)
        rows.append(ids)
        pos.append(p.cpu() + offset)
        feat.append(f.cpu())
        val.append(codes[p, f].cpu())
        offset += ids.numel()
    if not rows:
        raise DataError(f"corpus {cfg.corpus} gives no token rows of seq-len {cfg.seq_len}; give a longer corpus")
    return _Sparse(torch.cat(rows), torch.cat(pos), torch.cat(feat), torch.cat(val), kept)


def _context(lm: LM, data: _Sparse, dense: torch.Tensor, at: int, cfg: FeatureConfig) -> dict:
    """The tokens around flat position ``at`` (same row) with the feature's activation on each."""
    seq_len = data.ids.shape[1]
    row, p = divmod(at, seq_len)
    lo, hi = max(0, p - cfg.left), min(seq_len, p + cfg.right + 1)
    values = dense[row * seq_len + lo: row * seq_len + hi]
    return {"tokens": lm.to_str_tokens(data.ids[row, lo:hi]), "values": [round(float(v), 4) for v in values],
            "max_index": p - lo, "max": round(float(dense[at]), 4)}


def _quantile_examples(lm, data, dense, where, values, cfg, gen) -> list[dict]:
    """A few contexts from each activation quantile bin (lowest bin first)."""
    if not cfg.quantile_bins or not values.numel():
        return []
    edges = torch.quantile(values, torch.linspace(0, 1, cfg.quantile_bins + 1))
    out = []
    for b in range(cfg.quantile_bins):
        inside = ((values >= edges[b]) & (values <= edges[b + 1])).nonzero().flatten()
        picks = inside[torch.randperm(inside.numel(), generator=gen)[:cfg.per_bin]]
        out.append({"bin_min": float(edges[b]), "bin_max": float(edges[b + 1]), "bin_contains": int(inside.numel()),
                    "examples": [_context(lm, data, dense, int(where[i]), cfg) for i in picks]})
    return out


def _logit_effects(lm: LM, sae: SparseAutoencoder, f: int, k: int) -> dict:
    """The tokens whose logits the feature's decoder direction raises and lowers most (W_U . W_dec[f])."""
    with torch.no_grad():
        effect = lm.W_U.float() @ (sae.W_dec[f].float() / sae.input_scale)  # (vocab,)
    top, bottom = effect.topk(k), (-effect).topk(k)
    return {"positive": [[t, v] for t, v in zip(lm.to_str_tokens(top.indices), top.values.tolist())],
            "negative": [[t, v] for t, v in zip(lm.to_str_tokens(bottom.indices), (-bottom.values).tolist())]}


def _page(lm, sae, data: _Sparse, f: int, cfg: FeatureConfig, gen) -> dict:
    mine = data.feature == f
    where, values = data.position[mine], data.value[mine]
    dense = torch.zeros(data.ids.numel())  # (positions,)
    dense[where] = values
    order = values.argsort(descending=True)[:cfg.top_examples]
    top = [_context(lm, data, dense, int(where[i]), cfg) for i in order]
    heights, edges = torch.histogram(values, bins=20) if values.numel() else (torch.zeros(0), torch.zeros(0))
    return {"feature": f, "density": values.numel() / max(data.kept, 1),
            "max": float(values.max()) if values.numel() else 0.0,
            "top_token": top[0]["tokens"][top[0]["max_index"]] if top else "", "top": top,
            "quantiles": _quantile_examples(lm, data, dense, where, values, cfg, gen),
            "histogram": {"heights": heights.tolist(), "edges": edges.tolist()},
            "logits": _logit_effects(lm, sae, f, cfg.logit_tokens)}


def feature_examples(lm: LM, sae: SparseAutoencoder, site: Site,
                     config: FeatureConfig | None = None) -> FeatureExamples:
    """Examples and statistics of the selected features (``config.features``, or a seeded sample of those firing)."""
    cfg = config or FeatureConfig()
    cfg.check_features(sae.d_sae)
    site = check_sae(sae, lm, site, force=True)  # the caller chose the site and model; the shapes must hold
    sae = sae.to(lm.device).eval()  # the SAE follows the model
    lm.check_length(cfg.seq_len)
    first_rows(lm.tokenizer, cfg)  # an empty or binary corpus: one line before any pass
    data = _collect(lm, sae, site, cfg)
    counts = torch.bincount(data.feature, minlength=sae.d_sae)
    gen = torch.Generator().manual_seed(cfg.sample_seed)
    chosen = list(cfg.features) or _sample(counts, cfg.n_features, gen)
    pages = [_page(lm, sae, data, f, cfg, gen) for f in chosen]
    return FeatureExamples(model=lm.name, site=str(site), d_sae=sae.d_sae, tokens=data.kept,
                           density=(counts.float() / max(data.kept, 1)), pages=pages, config=cfg)


def _sample(counts: torch.Tensor, n: int, gen: torch.Generator) -> list[int]:
    alive = counts.nonzero().flatten()
    return sorted(alive[torch.randperm(alive.numel(), generator=gen)[:n]].tolist())
