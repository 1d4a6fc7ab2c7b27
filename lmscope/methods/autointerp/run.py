"""Automated interpretability of one layer: sample units, explain, simulate, score; resumable, one record per unit.

A run's excerpts are saved at its first start and read back when it resumes, checked against what the model, SAE
and corpus give now (:func:`run_excerpts`); :func:`scored_so_far` gives the result of a run part way.

Cunningham et al. (2023) §3: SAE features against the model's own neurons and against random, PCA and ICA
directions of the same activations, scored with Bills et al.'s explainer -> simulator pipeline.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path

import torch

from lmscope.errors import ArtifactError, ConfigError, InputError
from lmscope.io import Result, read_json
from lmscope.methods.autointerp.config import UNIT_KINDS, SampleConfig, ScoreConfig
from lmscope.methods.autointerp.sampling import (
    Excerpts,
    collect,
    fit_activations,
    save_excerpts,
    saved_excerpts,
    split_examples,
)
from lmscope.methods.autointerp.scoring import score_unit
from lmscope.methods.autointerp.units import (
    PLANTED,
    ica_units,
    neuron_units,
    pca_units,
    planted_units,
    random_units,
    sae_units,
)
from lmscope.model.lm import LM
from lmscope.model.sites import Site
from lmscope.model.units import Units
from lmscope.progress import tqdm
from lmscope.runs import RECORDS, SETTINGS, Run, folder_records, now_iso


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
    planned: dict[str, int] = field(default_factory=dict)  # kind -> units when finished; {}: the run is finished

    def scores(self, kind: str, key: str = "score") -> list[float]:
        """The finite scores of one unit kind."""
        return [r[key] for r in self.records if r["kind"] == kind and r.get(key) is not None
                and math.isfinite(r[key])]

    def summary(self) -> dict:
        """Per kind: units, each scorer's results, distinct explanations, unreadable answers.

        Each scorer: the units it scored, their mean with a bootstrap 95% interval (and for detection and fuzzing the
        mean balanced accuracy).
        """
        kinds = {}
        for kind in dict.fromkeys(r["kind"] for r in self.records):
            mine = [r for r in self.records if r["kind"] == kind]
            per = {name: self._scorer(kind, key) for name, key in SCORERS.items()}
            kinds[kind] = {"units": len(mine), "scored": per["simulation"]["n"],
                           "mean_score": per["simulation"]["mean"], "ci95": per["simulation"]["ci95"],
                           "mean_detection": per["detection"]["mean"], "scorers": per, **distinct(mine),
                           "malformed": sum(r["malformed"] for r in mine)}
        return {"model": self.model, "sites": self.sites, "explainer": self.explainer, "simulator": self.simulator,
                "scorers": scorers(self.score_config),
                "excerpts": {"explain": self.config.explain_examples, "score_top": self.config.score_top,
                             "score_quantiles": self.config.score_quantiles, "score_random": self.config.score_random,
                             "tokens": self.config.seq_len, "window": self.config.window},
                "kinds": kinds, "controls": controls(kinds), "timing": timing(self.records),
                "progress": self.progress()}

    def progress(self) -> dict | None:
        """None for a finished run; else the units scored so far against those the run will score, per kind.

        ``planned`` is an upper bound: SAE features and neurons are sampled among those that fire, and a planted set
        with no one-token word in the tokenizer is left out.
        """
        if not self.planned:
            return None
        scored = Counter(r["kind"] for r in self.records)
        return {"scored": len(self.records), "planned": sum(self.planned.values()),
                "by_kind": {k: [scored.get(k, 0), n] for k, n in self.planned.items()}}

    def _scorer(self, kind: str, key: str) -> dict:
        values = self.scores(kind, key)
        row = {"n": len(values), "mean": sum(values) / len(values) if values else None,
               "ci95": list(bootstrap_ci(values))}
        if key != "score":
            accuracy = self.scores(kind, f"{key}_accuracy")
            row["accuracy"] = sum(accuracy) / len(accuracy) if accuracy else None
        return row


SCORERS = {"simulation": "score", "detection": "detection", "fuzzing": "fuzzing"}  # scorer -> record key


PLANTED_MIN, RANDOM_BAND = 0.85, 0.1  # planted units' least mean detection AUROC; random's largest |AUROC - 0.5|


def controls(kinds: dict) -> dict:
    """Whether the pipeline can tell meaning from noise.

    Planted units must be detected (mean AUROC >= 0.85) and random directions must not (mean within 0.5 +- 0.1); each
    check is None when its kind or detection did not run. Each mean's bootstrap 95% interval is given beside it (a
    verdict whose interval crosses its bar is a narrow one).
    """
    def stat(kind: str, scorer: str, key: str = "mean"):
        return kinds.get(kind, {}).get("scorers", {}).get(scorer, {}).get(key)

    planted = {s: stat("planted", s) for s in SCORERS}
    random = {s: stat("random", s) for s in SCORERS}
    return {"planted": planted, "random": random, "planted_min": PLANTED_MIN, "random_band": RANDOM_BAND,
            "planted_ci": stat("planted", "detection", "ci95") or [None, None],
            "random_ci": stat("random", "detection", "ci95") or [None, None],
            "planted_ok": None if planted["detection"] is None else planted["detection"] >= PLANTED_MIN,
            "random_ok": None if random["detection"] is None else abs(random["detection"] - 0.5) <= RANDOM_BAND}


def _stage_means(timed: list[dict]) -> dict[str, float]:
    """Mean seconds of each stage over the units that ran it."""
    stages = {}
    for name in dict.fromkeys(k for r in timed for k in r["seconds"]):
        values = [r["seconds"][name] for r in timed if name in r["seconds"]]
        stages[name] = sum(values) / len(values)
    return stages


def _per_hour(stages: dict[str, float], names) -> float | None:
    total = sum(stages.get(n, 0.0) for n in names)
    return 3600 / total if total > 0 else None


def timing(records: list[dict]) -> dict:
    """Wall time of the scored units: mean seconds a unit per stage and in all, units an hour, and where they ran.

    ``units_per_hour`` counts every stage that ran; ``units_per_hour_without_simulation`` explain, detection and
    fuzzing alone (the cheap scorers). ``scored_on``: units per backend description (model, dtype, machine and
    threads: a run resumed elsewhere, or with other threads, names each); ``by_machine``: the units, seconds a unit and
    units an hour of each description (runs sharing a CPU are each slower). Records written before timing was kept
    (no ``seconds``) are left out.
    """
    timed = [r for r in records if r.get("seconds")]
    stages = _stage_means(timed)
    by_machine = {}
    for where in dict.fromkeys(r.get("scored_on", "") for r in timed):
        mine = _stage_means([r for r in timed if r.get("scored_on", "") == where])
        by_machine[where] = {"units": sum(r.get("scored_on", "") == where for r in timed),
                             "seconds_per_unit": sum(mine.values()), "units_per_hour": _per_hour(mine, mine)}
    return {"units": len(timed), "seconds_per_unit": sum(stages.values()) if timed else None, "stages": stages,
            "units_per_hour": _per_hour(stages, stages),
            "units_per_hour_without_simulation": _per_hour(stages, [n for n in stages if n != "simulation"]),
            "scored_on": {w: v["units"] for w, v in by_machine.items()}, "by_machine": by_machine,
            "wall": wall_clock(timed)}


def wall_clock(records: list[dict]) -> dict | None:
    """Units an hour of wall time: the units over the time while any of them was being scored.

    Each unit was busy from its finish time less its seconds; overlapping units (runs at once on one machine, as
    the comparison's two runs) count that time once, and the gaps between sessions not at all. None when fewer than
    two units say when they finished (records written before they did).
    """
    spans = sorted((end - sum(r["seconds"].values()), end) for r in records if r.get("finished")
                   for end in [datetime.fromisoformat(r["finished"]).timestamp()])
    if len(spans) < 2:
        return None
    busy, (start, stop) = 0.0, spans[0]
    for lo, hi in spans[1:]:
        if lo > stop:
            busy, start = busy + stop - start, lo
        stop = max(stop, hi)
    busy += stop - start
    return {"units": len(spans), "hours": busy / 3600, "units_per_hour": len(spans) / busy * 3600 if busy else None}


def scorers(cfg: ScoreConfig) -> list[str]:
    """The scorers a configuration runs."""
    return [name for name in SCORERS if getattr(cfg, name)]


def normalised(explanation: str) -> str:
    """An explanation compared for sameness: lower case, words only."""
    return " ".join("".join(c if c.isalnum() else " " for c in explanation.lower()).split())


def distinct(records: list[dict]) -> dict:
    """How many of the units' explanations are distinct, and the most common one with its share.

    A degenerate explainer writes the same sentence for most units: a share near 1.
    """
    given = [r["explanation"] for r in records if r.get("explanation")]
    texts = [normalised(t) for t in given]
    if not texts:
        return {"distinct": 0, "most_common": None, "most_common_share": None}
    top, count = Counter(texts).most_common(1)[0]
    return {"distinct": len(set(texts)), "most_common": given[texts.index(top)],
            "most_common_share": count / len(texts)}


def kind_site(kind: str, site: Site) -> Site:
    """Where units of ``kind`` are read for a run at ``site``.

    Neurons at the MLP keys of its layer, planted units at the embeddings, every other kind at ``site`` itself.
    """
    return {"neurons": Site(site.layer, "mlp_key"), "planted": Site(0, "embed")}.get(kind, site)


def planned_units(cfg: SampleConfig) -> dict[str, int]:
    """The units of each kind a run of ``cfg`` scores (at most: see :meth:`AutointerpResult.progress`)."""
    chosen = len(cfg.units) or cfg.n_units
    counts = {"sae": chosen, "neurons": chosen, "planted": len(PLANTED)}
    return {k: counts.get(k, cfg.n_baseline_units or cfg.n_units) for k in cfg.kinds}


def unit_sets(lm: LM, sae: Units | None, site: Site, cfg: SampleConfig) -> list[Units]:
    """The units of every asked kind (fit on ``fit_tokens`` activations of the layer); ``sae``: its features."""
    if "sae" in cfg.kinds and sae is None:
        raise ConfigError("unit kind 'sae' needs an SAE (--sae FOLDER)")
    neuron_site = lm.check(kind_site("neurons", site))
    fit = fit_activations(lm, [site, neuron_site] if "neurons" in cfg.kinds else [site], cfg)
    gen = torch.Generator().manual_seed(cfg.unit_seed)
    x, n, nb = fit[site], cfg.n_units, cfg.n_baseline_units or cfg.n_units
    makers = {"sae": lambda: sae_units(sae, x, n, gen, cfg.units), "neurons": lambda: neuron_units(
        neuron_site, fit.get(neuron_site), n, gen, cfg.units), "random": lambda: random_units(site, x, nb, gen),
        "pca": lambda: pca_units(site, x, nb), "ica": lambda: ica_units(site, x, nb, gen),
        "planted": lambda: planted_units(kind_site("planted", site), lm.model.get_input_embeddings().weight,
                                         lm.tokenizer)}
    return [makers[k]() for k in cfg.kinds]


def window(values: torch.Tensor, width: int, gen: torch.Generator | None = None) -> slice:
    """The ``width`` positions of an excerpt that are shown.

    Around its peak (3/4 of the window before it), or a random window (``gen`` given: a random excerpt); the whole
    excerpt for ``width`` 0 or at least its length.
    """
    n = values.numel()
    if not width or width >= n:
        return slice(0, n)
    if gen is not None:
        start = int(torch.randint(n - width + 1, (1,), generator=gen))
    else:
        start = min(max(int(values.argmax()) - (width - width // 4) + 1, 0), n - width)
    return slice(start, start + width)


def _excerpts(lm: LM, data: Excerpts, kind: str, j: int, cfg: SampleConfig, gen: torch.Generator) -> dict:
    acts = data.acts[kind][:, :, j].float()  # (rows, seq)
    split = split_examples(acts.max(1).values, cfg, gen)

    special = set(lm.tokenizer.all_special_tokens)  # shown as a line break: an explainer must not read them as its own

    def rows(index: list[int], random: bool = False) -> list[tuple[list[str], torch.Tensor]]:
        shown = [window(acts[r], cfg.window, gen if random else None) for r in index]
        return [([("\n" if t in special else t) for t in lm.to_str_tokens(data.ids[r, w])], acts[r, w])
                for r, w in zip(index, shown)]

    return {"explain": rows(split.explain), "top": rows(split.score_top) + rows(split.score_quantile),
            "random": rows(split.score_random, random=True), "rows": asdict(split)}


EXCERPTS = "excerpts.safetensors"  # the run's excerpts: a resumed run reads the corpus once, not at every start


def run_excerpts(lm: LM, sets: list[Units], cfg: SampleConfig, out: Path) -> Excerpts:
    """The run's excerpts of every unit: saved in ``out`` at its first start, read back (and checked) when it resumes.

    Two bytes a unit and token read (float16): 512 KB a unit at the default 262,144 tokens.
    """
    path = out / EXCERPTS
    if path.is_file():
        return saved_excerpts(lm, sets, cfg, path)
    data = collect(lm, sets, cfg)
    save_excerpts(path, data, sets)
    return data


def in_turn(todo: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """(kind, index, unit) items taken in turn across kinds: the first of every kind, then the second, ...

    A long run stopped part way (it resumes) then holds about as many units of every kind, so what it has so far
    already compares the kinds.
    """
    by_kind: dict[str, list] = {}
    for item in todo:
        by_kind.setdefault(item[0], []).append(item)
    rounds = max((len(v) for v in by_kind.values()), default=0)
    return [items[i] for i in range(rounds) for items in by_kind.values() if i < len(items)]


def autointerp(lm: LM, site: Site, cfg: SampleConfig, score_cfg: ScoreConfig, explainer, simulator,
               out, sae: Units | torch.nn.Module | None = None, names: tuple[str, str] = ("", "")) -> AutointerpResult:
    """Explain and score ``cfg.n_units`` units of every kind at ``site``'s layer; records resume in ``out``.

    Units are scored in turn across kinds (:func:`in_turn`); the result lists them by kind.

    ``sae``: the SAE's features (``sae.units(site)``), or the SAE itself.
    """
    site = lm.check(site)
    if sae is not None and not isinstance(sae, Units):  # an SAE module: its features at the site
        sae = sae.to(lm.device).units(site)
    settings = {"model": lm.name, "site": str(site), "sample": asdict(cfg), "explainer": names[0],
                "simulator": names[1], "scorers": scorers(score_cfg), "mark": score_cfg.mark,
                "chat": getattr(explainer, "chat", False), "judge": getattr(simulator, "judge_name", None)}
    run = Run(out, settings, key="key")
    sets = unit_sets(lm, sae, site, cfg)
    data = run_excerpts(lm, sets, cfg, run.out)
    todo = [(u.name, j, unit) for u in sets for j, unit in enumerate(u.unit_ids)]  # the result's order: by kind
    scored_on = " / ".join(dict.fromkeys(getattr(b, "runs_on", "") for b in (explainer, simulator)))
    with run.writer() as write:
        for kind, j, unit in tqdm(in_turn(todo), desc="autointerp units", unit="unit"):
            key = f"{kind}:{unit}"
            if key in run.done:
                continue
            gen = torch.Generator().manual_seed(cfg.unit_seed * 1_000_003 + UNIT_KINDS.index(kind) * 7919 + unit)
            excerpts = _excerpts(lm, data, kind, j, cfg, gen)
            label = {"label": PLANTED[unit][0]} if kind == "planted" else {}
            if not excerpts["explain"]:
                write({"key": key, "kind": kind, "unit": unit, **label, "explanation": "", "score": None,
                       "detection": None, "fuzzing": None, "malformed": 0, "scored_excerpts": 0,
                       "note": "never active on the excerpts read"})
                continue
            record = score_unit(explainer, simulator, excerpts, score_cfg, unit=key, seed=int(gen.initial_seed()))
            write({"key": key, "kind": kind, "unit": unit, **label, **record, "rows": excerpts["rows"],
                   "scored_on": scored_on, "finished": now_iso()})
    records = [run.done[f"{k}:{u}"] for k, _, u in todo]
    return AutointerpResult(model=lm.name, sites={u.name: str(u.site) for u in sets}, records=records,
                            explainer=names[0], simulator=names[1], config=cfg, score_config=score_cfg)


RECORD_KEYS = {"key", "kind", "unit", "explanation", "score"}  # what every unit's record holds


def scored_so_far(folder) -> AutointerpResult:
    """The result of the units an autointerp run in ``folder`` has scored so far; nothing is loaded but its files.

    The run may be unfinished, killed or still running (its records are read, never repaired): the result's
    :meth:`~AutointerpResult.progress` says how far it is. A finished run's own saved result is returned as it is.
    """
    folder = Path(folder)
    if (folder / "result" / "cfg.json").is_file():
        return AutointerpResult.load(folder / "result")
    settings = read_json(folder / SETTINGS) if (folder / SETTINGS).is_file() else None
    if not isinstance(settings, dict) or not {"sample", "site", "explainer", "scorers"} <= set(settings):
        raise InputError(f"{folder} holds no autointerp run (no {SETTINGS} with an autointerp run's settings); give "
                         "the --out folder of `lmscope autointerp`")
    cfg = SampleConfig(**settings["sample"])
    score_cfg = ScoreConfig(**{name: name in settings["scorers"] for name in SCORERS},
                            mark=settings.get("mark", ScoreConfig.mark))
    found = folder_records(folder)  # never repaired: the run may be writing its last line
    if not found:
        raise InputError(f"the autointerp run in {folder} has scored no unit yet (its {RECORDS} is empty)")
    bad = next((i for i, r in enumerate(found) if not isinstance(r, dict) or not RECORD_KEYS <= set(r)), None)
    if bad is not None:
        raise ArtifactError(f"{folder}: record {bad + 1} is not an autointerp unit's (it needs "
                            f"{', '.join(sorted(RECORD_KEYS))})")
    order = {k: i for i, k in enumerate(cfg.kinds)}
    records = sorted({r["key"]: r for r in found}.values(), key=lambda r: order.get(r["kind"], len(order)))
    site = Site.parse(settings["site"])
    return AutointerpResult(model=settings["model"], sites={k: str(kind_site(k, site)) for k in cfg.kinds},
                            records=records, explainer=settings["explainer"], simulator=settings["simulator"],
                            config=cfg, score_config=score_cfg, planned=planned_units(cfg))


def relabelled(result: AutointerpResult, label: str) -> AutointerpResult:
    """``result`` with its SAE features' kind named ``label`` (two dictionaries side by side in one comparison)."""
    name = {"sae": label}
    return replace(result, records=[{**r, "kind": name.get(r["kind"], r["kind"])} for r in result.records],
                   sites={name.get(k, k): v for k, v in result.sites.items()},
                   planned={name.get(k, k): v for k, v in result.planned.items()})


def merged(results: list[AutointerpResult]) -> AutointerpResult:
    """One comparison of several runs of the same model (their kinds must differ: see :func:`relabelled`).

    Unfinished when any run is: a finished run's units then count as planned and scored.
    """
    models = sorted({r.model for r in results})
    kinds = [k for r in results for k in dict.fromkeys(x["kind"] for x in r.records)]
    if len(models) > 1:
        raise InputError(f"these autointerp runs study different models ({', '.join(models)}): compare runs of one")
    if len(set(kinds)) < len(kinds):
        twice = sorted({k for k in kinds if kinds.count(k) > 1})
        raise InputError(f"more than one run holds units of the kind {', '.join(twice)}: name each run's SAE "
                         "features apart (RUN=LABEL)")
    planned = {}
    if any(r.planned for r in results):
        for r in results:
            planned.update(r.planned or Counter(x["kind"] for x in r.records))
    return replace(results[0], records=[x for r in results for x in r.records],
                   sites={k: v for r in results for k, v in r.sites.items()}, planned=planned)


def runs_so_far(specs: list[str]) -> AutointerpResult:
    """One comparison of the runs ``FOLDER`` or ``FOLDER=LABEL`` (that run's SAE features named LABEL), so far."""
    results = []
    for spec in specs:
        folder, _, label = spec.partition("=")
        result = scored_so_far(folder)
        results.append(relabelled(result, label) if label else result)
    return merged(results)
