"""Causal feature identification on IOI (Cunningham et al. 2023, §5): which single units carry the task.

For the first IOI pairs the model answers correctly (logit(IO) > logit(S) on the clean prompt), every unit of each basis
(SAE features, the MLP neurons of the same layer, the residual dimensions) is patched alone from the clean run into
the corrupted one at one position, and its effect on the logit difference is recorded, normalised by the pair's
total effect (clean - corrupted). The sparsity claim is then a count: how many units of each basis, taken from the
largest |effect|, account for half of the summed |effects|.

With an output folder, the screening of every pair (which ones the model answers) is kept there beside the records,
keyed by the model, its weights, device and dtype and the pairs, so that a resumed run does not screen them again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from lmscope import config as check
from lmscope.data.ioi import IOIPair
from lmscope.errors import ConfigError, InputError, LmscopeError
from lmscope.io import Result, read_json, write_json
from lmscope.methods.patching.config import logit_diff
from lmscope.methods.patching.engine import prompt_pair
from lmscope.methods.patching.units import unit_effects
from lmscope.model.lm import LM
from lmscope.model.units import Units
from lmscope.progress import tqdm
from lmscope.runs import Run

log = logging.getLogger(__name__)

POSITIONS = ("s2", "last")
SCREENING = "screening.json"


@dataclass
class IOIConfig:
    """Which pairs, where to patch, and how many patched runs per forward pass."""

    n_prompts: int = field(default=50, metadata={"help": "correctly answered pairs to patch"})
    position: str = field(default="s2", metadata={
        "help": "where to patch: s2 (the repeated name, where a middle layer holds the task) or last"})
    batch_size: int = field(default=64, metadata={"help": "patched runs per forward pass"})
    name_seed: int = field(default=0, metadata={"help": "seed of the third names of the corrupted prompts"})

    def __post_init__(self) -> None:
        check.at_least(self, 1, "n_prompts", "batch_size")
        if self.position not in POSITIONS:
            raise ConfigError(f"position must be one of {POSITIONS}, got {self.position!r}")


@dataclass
class IOIFeatureResult(Result):
    """Per basis: each used pair's single-unit effects, exact and estimated, normalised by the pair's total effect."""

    model: str
    sites: dict[str, str]  # basis -> site
    n_pairs: int  # pairs built from the file
    n_correct: int  # pairs with logit(IO) > logit(S) on the clean prompt
    n_top1: int  # pairs whose clean top-1 next token is IO
    cases: list[int]  # case ids of the patched pairs
    total_effect: torch.Tensor  # (n_used,) clean - corrupted logit difference
    exact: dict[str, torch.Tensor]  # basis -> (n_used, n_units)
    attribution: dict[str, torch.Tensor]  # basis -> (n_used, n_units)
    config: IOIConfig = field(default_factory=IOIConfig)

    def half_count(self, basis: str) -> torch.Tensor:
        """(n_used,) per pair: the fewest units, largest |effect| first, whose |effects| sum to half of all."""
        mags = self.exact[basis].abs().sort(dim=1, descending=True).values  # (n, units)
        share = mags.cumsum(1) / mags.sum(1, keepdim=True).clamp_min(1e-12)
        return (share < 0.5).sum(1) + 1

    def ranking(self, basis: str, top: int = 20) -> list[dict]:
        """The units with the largest mean effect over the pairs (mean, and on how many pairs they mattered)."""
        effect = self.exact[basis]
        mean = effect.mean(0)
        order = mean.abs().argsort(descending=True)[:top]
        return [{"unit": int(u), "mean_effect": float(mean[u]), "pairs": int((effect[:, u] != 0).sum())}
                for u in order]

    def agreement(self, basis: str) -> float:
        """Pearson correlation of attribution and exact effects over every (pair, unit) that changed."""
        mask = self.exact[basis] != 0
        a, e = self.attribution[basis][mask], self.exact[basis][mask]
        return float(torch.corrcoef(torch.stack([a, e]))[0, 1]) if a.numel() > 1 else float("nan")

    def summary(self) -> dict:
        """Counts, and per basis the half-effect unit count (median over pairs), the top units and the agreement."""
        per = {b: {"site": self.sites[b], "units": self.exact[b].shape[1],
                   "changed_per_pair": float((self.exact[b] != 0).float().sum(1).mean()),
                   "half_effect_units_median": float(self.half_count(b).float().median()),
                   "top": self.ranking(b, 10), "attribution_vs_exact_r": self.agreement(b)} for b in self.exact}
        return {"model": self.model, "n_pairs": self.n_pairs, "n_correct": self.n_correct, "n_top1": self.n_top1,
                "n_used": len(self.cases), "position": self.config.position,
                "mean_total_effect": float(self.total_effect.mean()), "bases": per}


@torch.no_grad()
def answers(lm: LM, pairs: list[IOIPair]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pair on the clean prompt: (logit(IO) - logit(S), whether IO is the top-1 next token)."""
    diffs, top1 = [], []
    for pair in tqdm(pairs, desc="ioi answers", unit="pair", leave=False):
        last = lm(pair.clean)[0, -1].float()
        diffs.append(float(last[pair.io_id] - last[pair.s_id]))
        if not math.isfinite(diffs[-1]):
            raise InputError(f"{lm.name} gives non-finite logits on IOI pair {pair.case_id} ({pair.clean!r})")
        top1.append(int(last.argmax()) == pair.io_id)
    return torch.tensor(diffs), torch.tensor(top1)


def _screening_key(lm: LM, pairs: list[IOIPair]) -> dict:
    """What a saved screening must have been made with: the model, its weights, device and dtype, and the pairs."""
    listed = json.dumps([[p.case_id, p.clean, p.io_id, p.s_id] for p in pairs])
    return {"model": lm.name, "fingerprint": lm.fingerprint(), "device": str(lm.device), "dtype": str(lm.dtype),
            "pairs": hashlib.sha256(listed.encode()).hexdigest()}


def _saved_screening(path: Path | None, key: dict, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The screening saved at ``path`` by an earlier run with the same ``key``, else None."""
    if path is None or not path.is_file():
        return None
    try:
        saved = read_json(path)
        if saved["key"] != key or not len(saved["diffs"]) == len(saved["top1"]) == n:
            return None
        diffs, top1 = torch.tensor(saved["diffs"], dtype=torch.float32), torch.tensor(saved["top1"], dtype=torch.bool)
    except (LmscopeError, KeyError, TypeError, ValueError) as err:
        log.warning("ignoring the saved screening %s (%s); screening the pairs again", path, err)
        return None
    log.info("read the screening of %d IOI pairs from %s", n, path)
    return diffs, top1


def _patch_pair(lm: LM, pair: IOIPair, bases: list[Units], config: IOIConfig) -> dict:
    """One pair's record: its total effect and, per basis, the changed units' normalised effects (sparse)."""
    clean_ids, corr_ids = prompt_pair(lm, pair.clean, pair.corrupted)
    position = pair.s2_position if config.position == "s2" else corr_ids.shape[1] - 1
    metric = logit_diff(pair.io_id, pair.s_id)
    record: dict = {"case": pair.case_id}
    for basis in bases:
        fx = unit_effects(lm, clean_ids, corr_ids, metric, basis, position, config.batch_size)
        gap = fx.clean_metric - fx.corrupted_metric
        if not math.isfinite(gap) or gap == 0:
            raise InputError(f"IOI pair {pair.case_id}: the corruption leaves logit(IO) - logit(S) at "
                             f"{fx.clean_metric:.6g} (total effect {gap}): nothing to normalise the effects by")
        changed = fx.delta.nonzero().flatten()
        record[basis.name] = {"units": changed.tolist(), "exact": (fx.exact[changed] / gap).tolist(),
                              "attribution": (fx.attribution[changed] / gap).tolist()}
        record["total_effect"] = gap
    return record


def _dense(records: list[dict], basis: Units, key: str) -> torch.Tensor:
    out = torch.zeros(len(records), basis.n_units)
    for i, r in enumerate(records):
        out[i, r[basis.name]["units"]] = torch.tensor(r[basis.name][key])
    return out


def ioi_features(lm: LM, pairs: list[IOIPair], bases: list[Units], config: IOIConfig | None = None,
                 out: str | Path | None = None) -> IOIFeatureResult:
    """Patch every unit of every basis on the first ``n_prompts`` pairs the model answers correctly.

    ``out``: a folder where each finished pair is recorded; a killed run resumes there (without screening the pairs
    again: the screening is kept there too).
    """
    config = config or IOIConfig()
    names = [b.name for b in bases]
    if not names or len(set(names)) < len(names):
        raise ConfigError(f"give one or more unit bases with distinct names to patch, got {names}")
    path = Path(out) / SCREENING if out is not None else None
    key = _screening_key(lm, pairs) if out is not None else {}
    saved = _saved_screening(path, key, len(pairs))
    diffs, top1 = saved if saved is not None else answers(lm, pairs)
    chosen = [p for p, d in zip(pairs, diffs.tolist()) if d > 0][:config.n_prompts]
    if not chosen:
        raise InputError(f"{lm.name} prefers the subject over the indirect object on all {len(pairs)} IOI pairs; "
                         f"nothing to patch")
    settings = {"model": lm.name, "bases": {b.name: str(b.site) for b in bases}, "config": asdict(config),
                "cases": [p.case_id for p in chosen]}
    run = Run(out, settings, key="case") if out is not None else None
    if run is not None and saved is None:  # the folder is this run's (its settings were checked)
        write_json(path, {"key": key, "diffs": diffs.tolist(), "top1": top1.tolist()}, indent=None)
    done = run.done if run else {}
    with run.writer() if run else contextlib.nullcontext(lambda r: None) as write:
        for pair in tqdm(chosen, desc="ioi features", unit="pair"):
            if pair.case_id not in done:
                done[pair.case_id] = _patch_pair(lm, pair, bases, config)
                write(done[pair.case_id])
    records = [done[p.case_id] for p in chosen]
    return IOIFeatureResult(model=lm.name, sites={b.name: str(b.site) for b in bases}, n_pairs=len(pairs),
                            n_correct=int((diffs > 0).sum()), n_top1=int(top1.sum()),
                            cases=[p.case_id for p in chosen],
                            total_effect=torch.tensor([r["total_effect"] for r in records]),
                            exact={b.name: _dense(records, b, "exact") for b in bases},
                            attribution={b.name: _dense(records, b, "attribution") for b in bases}, config=config)
