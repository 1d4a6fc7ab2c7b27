"""Automated interpretability of one layer: sample units, explain, simulate, score; resumable, one record per unit.

Cunningham et al. (2023) §3: SAE features against the model's own neurons and against random, PCA and ICA
directions of the same activations, scored with Bills et al.'s explainer -> simulator pipeline.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field

import torch

from lmscope.errors import ConfigError
from lmscope.io import Result
from lmscope.methods.autointerp.config import UNIT_KINDS, SampleConfig, ScoreConfig
from lmscope.methods.autointerp.sampling import Excerpts, collect, fit_activations, split_examples
from lmscope.methods.autointerp.scoring import score_unit
from lmscope.methods.autointerp.units import ica_units, neuron_units, pca_units, random_units, sae_units
from lmscope.model.lm import LM
from lmscope.model.sites import Site
from lmscope.model.units import Units
from lmscope.progress import tqdm
from lmscope.runs import Run


def bootstrap_ci(values: list[float], n: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the mean (None, None for fewer than two values)."""
    if len(values) < 2:
        return (None, None)
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=len(values))) / len(values) for _ in range(n))
    lo, hi = int((1 - level) / 2 * n), int((1 + level) / 2 * n) - 1
    return means[lo], means[hi]


@dataclass
class AutointerpResult(Result):
    """One record per unit: kind, unit, explanation, simulation score, detection score, malformed answers."""

    model: str
    sites: dict[str, str]  # kind -> site
    records: list[dict]
    explainer: str
    simulator: str
    config: SampleConfig = field(default_factory=SampleConfig)
    score_config: ScoreConfig = field(default_factory=ScoreConfig)

    def scores(self, kind: str, key: str = "score") -> list[float]:
        """The finite scores of one unit kind."""
        return [r[key] for r in self.records if r["kind"] == kind and r.get(key) is not None
                and math.isfinite(r[key])]

    def summary(self) -> dict:
        """Per kind: units, mean score with a bootstrap 95% interval, mean detection, malformed answers."""
        kinds = {}
        for kind in dict.fromkeys(r["kind"] for r in self.records):
            s, d = self.scores(kind), self.scores(kind, "detection")
            kinds[kind] = {"units": sum(r["kind"] == kind for r in self.records), "scored": len(s),
                           "mean_score": sum(s) / len(s) if s else None, "ci95": list(bootstrap_ci(s)),
                           "mean_detection": sum(d) / len(d) if d else None,
                           "malformed": sum(r["malformed"] for r in self.records if r["kind"] == kind)}
        return {"model": self.model, "sites": self.sites, "explainer": self.explainer, "simulator": self.simulator,
                "excerpts": {"explain": self.config.explain_examples, "score_top": self.config.score_top,
                             "score_random": self.config.score_random, "tokens": self.config.seq_len},
                "kinds": kinds}


def unit_sets(lm: LM, sae: Units | None, site: Site, cfg: SampleConfig) -> list[Units]:
    """The units of every asked kind (fit on ``fit_tokens`` activations of the layer); ``sae``: its features."""
    if "sae" in cfg.kinds and sae is None:
        raise ConfigError("unit kind 'sae' needs an SAE (--sae FOLDER)")
    neuron_site = lm.check(Site(site.layer, "mlp_key"))
    fit = fit_activations(lm, [site, neuron_site] if "neurons" in cfg.kinds else [site], cfg)
    gen = torch.Generator().manual_seed(cfg.unit_seed)
    x, n = fit[site], cfg.n_units
    makers = {"sae": lambda: sae_units(sae, x, n, gen, cfg.units), "neurons": lambda: neuron_units(
        neuron_site, fit.get(neuron_site), n, gen, cfg.units), "random": lambda: random_units(site, x, n, gen),
        "pca": lambda: pca_units(site, x, n), "ica": lambda: ica_units(site, x, n, gen)}
    return [makers[k]() for k in cfg.kinds]


def _excerpts(lm: LM, data: Excerpts, kind: str, j: int, cfg: SampleConfig, gen: torch.Generator) -> dict:
    acts = data.acts[kind][:, :, j].float()  # (rows, seq)
    split = split_examples(acts.max(1).values, cfg, gen)

    def rows(index: list[int]) -> list[tuple[list[str], torch.Tensor]]:
        return [(lm.to_str_tokens(data.ids[r]), acts[r]) for r in index]

    return {"explain": rows(split.explain), "top": rows(split.score_top) + rows(split.score_quantile),
            "random": rows(split.score_random), "rows": asdict(split)}


def autointerp(lm: LM, site: Site, cfg: SampleConfig, score_cfg: ScoreConfig, explainer, simulator,
               out, sae: Units | torch.nn.Module | None = None, names: tuple[str, str] = ("", "")) -> AutointerpResult:
    """Explain and score ``cfg.n_units`` units of every kind at ``site``'s layer; records resume in ``out``.

    ``sae``: the SAE's features (``sae.units(site)``), or the SAE itself.
    """
    site = lm.check(site)
    if sae is not None and not isinstance(sae, Units):  # an SAE module: its features at the site
        sae = sae.to(lm.device).units(site)
    settings = {"model": lm.name, "site": str(site), "sample": asdict(cfg), "explainer": names[0],
                "simulator": names[1], "detection": score_cfg.detection}
    run = Run(out, settings, key="key")
    sets = unit_sets(lm, sae, site, cfg)
    data = collect(lm, sets, cfg)
    workers = score_cfg.concurrency if score_cfg.backend == "http" else 1
    todo = [(u.name, j, unit) for u in sets for j, unit in enumerate(u.unit_ids)]
    with run.writer() as write:
        for kind, j, unit in tqdm(todo, desc="autointerp units", unit="unit"):
            key = f"{kind}:{unit}"
            if key in run.done:
                continue
            gen = torch.Generator().manual_seed(cfg.unit_seed * 1_000_003 + UNIT_KINDS.index(kind) * 7919 + unit)
            excerpts = _excerpts(lm, data, kind, j, cfg, gen)
            if not excerpts["explain"]:
                write({"key": key, "kind": kind, "unit": unit, "explanation": "", "score": None, "detection": None,
                       "malformed": 0, "scored_excerpts": 0, "note": "never active on the excerpts read"})
                continue
            record = score_unit(explainer, simulator, excerpts, score_cfg, workers, unit=key)
            write({"key": key, "kind": kind, "unit": unit, **record, "rows": excerpts["rows"]})
    records = [run.done[f"{k}:{u}"] for k, _, u in todo]
    return AutointerpResult(model=lm.name, sites={u.name: str(u.site) for u in sets}, records=records,
                            explainer=names[0], simulator=names[1], config=cfg, score_config=score_cfg)
