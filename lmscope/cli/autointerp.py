"""The ``autointerp`` commands: explain and score the units of one layer, and report a run so far.

``autointerp run`` (``autointerp`` alone) explains and scores SAE features, neurons and baseline directions;
``autointerp report`` writes the result of the units a run has scored so far, finished or not.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lmscope.cli.registry import arg, command, config, load_model, out_dir, save_result
from lmscope.errors import InputError
from lmscope.methods.autointerp import (
    HttpBackend,
    LocalBackend,
    SampleConfig,
    ScoreConfig,
    autointerp,
    check_prompts,
    runs_so_far,
)
from lmscope.methods.sae import check_sae, load_sae
from lmscope.model.loading import list_models, load
from lmscope.model.precision import speed_dtype
from lmscope.model.sites import Site
from lmscope.viz.autointerp import autointerp_report, progress_text, scores_figure
from lmscope.viz.report import save_figure

log = logging.getLogger(__name__)


EXPLAINER = "qwen2.5-coder-1.5b"  # the capable instruct model of the registry


def default_explainer() -> str:
    """The registry's instruct model when it is in the store (converted), else '' (the studied model itself)."""
    cached = {row["name"]: row["cached"] for row in list_models()}
    if cached.get(EXPLAINER):
        return EXPLAINER
    log.warning("autointerp explains with the studied model itself: %s is not in the store (lmscope model info %s "
                "fetches and converts it once, 1.1 GB) and small models explain poorly", EXPLAINER, EXPLAINER)
    return ""


def _backends(args, cfg: ScoreConfig, lm, out):
    """(explainer, simulator, their names) for the chosen backend."""
    if cfg.backend == "http":
        http = HttpBackend(cfg.base_url, cfg.api_model, out / "http-cache", cfg.api_key_env, cfg.timeout, cfg.retries,
                           cfg.budget, cfg.prompts, cfg.explanation_tokens, concurrency=cfg.concurrency)
        return http, http, (cfg.api_model, cfg.api_model)
    explainer_name = cfg.explainer or default_explainer()
    models = {"": lm}
    dtype = speed_dtype(args.device) if cfg.explainer_dtype == "auto" else cfg.explainer_dtype
    for name in {explainer_name, cfg.simulator or explainer_name} - {""}:
        models[name] = lm if name == lm.name else load(name, device=args.device, dtype=dtype)
    explainer = LocalBackend(models[explainer_name], cfg.prompts, cfg.explanation_tokens, cfg.chat, cfg.judge)
    simulator_lm = models[cfg.simulator or explainer_name]
    simulator = explainer if simulator_lm is explainer.lm else LocalBackend(simulator_lm, cfg.prompts, chat=cfg.chat,
                                                                                   judge=cfg.judge)
    return explainer, simulator, (explainer.lm.name, simulator.lm.name)


def _kind_line(row: dict, names: list[str]) -> str:
    """One kind's line: each run scorer's mean (units scored; '-' for none) and how many explanations are distinct."""
    scored = {name: row["scorers"][name] for name in names}
    parts = [f"{name} {r['mean']:.3f} (n={r['n']})" if r["mean"] is not None else f"{name} -"
             for name, r in scored.items()]
    parts.append(f"{row['distinct']}/{row['units']} distinct explanations")
    return "; ".join(parts)


@command("autointerp",
         arg("--sae", help="an SAE folder (its site gives the layer and the directions' site)"),
         arg("--layer", type=int, help="the layer (default: the SAE's); directions at resid_post of it"),
         configs=(SampleConfig, ScoreConfig), out="out/autointerp")
def autointerp_command(args) -> int:
    """Write records.jsonl (resumable), result/, autointerp.json, scores.png and report.html."""
    cfg, score_cfg = config(args, SampleConfig), config(args, ScoreConfig)
    check_prompts(score_cfg.prompts)  # a missing folder or a bad template: refused before anything loads
    sae = load_sae(args.sae) if args.sae else None
    if sae is not None and sae.site is None:
        raise InputError(f"the SAE in {args.sae} does not say where it reads; give --layer")
    site = sae.site if sae is not None else (
        Site(args.layer, "resid_post") if args.layer is not None else None)
    if site is None:
        raise InputError("give --layer, or an --sae whose site names it")
    lm = load_model(args)
    if sae is not None:
        site = check_sae(sae, lm, site)  # its width, weights and model against the loaded one
    out = out_dir(args)
    explainer, simulator, names = _backends(args, score_cfg, lm, out)
    result = autointerp(lm, site, cfg, score_cfg, explainer, simulator, out, sae=sae, names=names)
    _write(result, out)
    print(f"{lm.name} {site} -> {out}")
    return 0


def _write(result, out: Path) -> None:
    """Save the result, its summary, figure and report in ``out``, and print the summary."""
    save_result(out, result, "autointerp.json")
    save_figure(scores_figure(result), out / "scores.png")
    autointerp_report(result).write(out / "report.html")
    summary = result.summary()
    print(f"explained by {result.explainer}, scored by {result.simulator} ({', '.join(summary['scorers'])})")
    if summary["progress"]:
        print(f"  {progress_text(summary['progress'])}")
    for kind, row in summary["kinds"].items():
        print(f"  {kind} {_kind_line(row, summary['scorers'])}")
    timing = summary["timing"]
    if timing["units"]:
        print(f"  {timing['seconds_per_unit']:.1f} s a unit, {timing['units_per_hour']:.0f} units an hour "
              f"({timing['units']} timed)")


@command("autointerp-report",
         arg("runs", nargs="+", metavar="RUN", help="the --out folder of an autointerp run (finished, stopped part "
             "way, or still running); several are one comparison, RUN=LABEL naming that run's SAE features LABEL "
             "(two dictionaries side by side)"),
         out="out/autointerp-report")
def autointerp_report_command(args) -> int:
    """Write the result, autointerp.json, scores.png and report.html of the units the runs have scored so far."""
    out = out_dir(args)
    if any(Path(spec.partition("=")[0]).resolve() == out.resolve() for spec in args.runs):
        raise InputError(f"--out {out} is a run's own folder, where the run writes its result when it finishes; "
                         "give another")
    result = runs_so_far(args.runs)
    _write(result, out)
    print(f"{result.model}: {len(args.runs)} run(s) -> {out}")
    return 0
