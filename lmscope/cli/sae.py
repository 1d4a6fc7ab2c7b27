"""The SAE commands: ``sae-harvest``, ``sae-train`` (a sweep in one pass), ``sae-eval``, ``sae-features``.

Every input that can be checked before the model loads is (sites, config relations, the SAE folder and its site,
feature ids); the rest (the site's width, the folder's model, the corpus) before anything is written.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from lmscope.cli.registry import arg, command, config, load_model, out_dir
from lmscope.distributed import World
from lmscope.errors import InputError
from lmscope.io import write_json
from lmscope.methods.sae import (
    EvalConfig,
    FeatureConfig,
    HarvestConfig,
    Job,
    SaeConfig,
    TrainConfig,
    evaluate_sae,
    feature_examples,
    harvest,
    load_sae,
    save_sae,
    train_saes,
)
from lmscope.methods.sae.artifacts import check_sae
from lmscope.methods.sae.config import training_steps
from lmscope.methods.sae.harvest import check_sites
from lmscope.methods.sae.registry import sae_class
from lmscope.model.sites import Site
from lmscope.viz.features import write_feature_pages

KNOB_FLAGS = {"l1_coefficient": "sweep_l1", "k": "sweep_k", "l0_coefficient": "sweep_l0"}  # sweep knob -> its flag
SITES = arg("--sites", nargs="+", required=True, help="sites as kind.layer, e.g. resid_post.15 mlp_out.3")


@command("sae-harvest",
         SITES,
         configs=(HarvestConfig,), out="out/activations")
def sae_harvest(args) -> int:
    """Run the model over the corpus and store the activations as safetensors shards with a manifest."""
    cfg = config(args, HarvestConfig)
    sites = [Site.parse(s) for s in args.sites]
    check_sites(sites)
    lm = load_model(args)
    world = World.from_env(lm.device)
    manifest = harvest(lm, sites, cfg, out_dir(args), shard=(world.rank, world.size))
    print(f"{lm.name}: {sum(manifest['shards'].values())} activations at {', '.join(manifest['sites'])} in "
          f"{len(manifest['shards'])} shards -> {out_dir(args)}")
    return 0


def _sweep(args) -> list[SaeConfig]:
    """One SaeConfig per combination of the swept values (architectures x L1 / L0 coefficients x k x ratios).

    An L1 coefficient left unset takes each architecture's own default; each architecture takes only its own knob
    (TopK variants k, L1 variants the L1 coefficient, JumpReLU the L0 coefficient).
    """
    axes = {"architecture": args.sweep_architecture or [args.architecture],
            **{knob: getattr(args, flag) or [getattr(args, knob)] for knob, flag in KNOB_FLAGS.items()},
            "ratio": args.sweep_ratio or [args.ratio]}
    configs = []
    for values in itertools.product(*axes.values()):
        cfg = config(argparse.Namespace(**{**vars(args), **dict(zip(axes, values))}), SaeConfig)
        if cfg not in configs and not _redundant(cfg, args):
            configs.append(cfg)
    return configs


def _redundant(cfg: SaeConfig, args) -> bool:
    """A swept value that does not apply to this architecture (k for L1 variants, L1 for TopK variants, ...)."""
    own = sae_class(cfg.architecture).sweep_knob
    return any(knob != own and getattr(args, flag) and getattr(cfg, knob) != getattr(args, flag)[0]
               for knob, flag in KNOB_FLAGS.items())


@command("sae-train",
         arg("--sites", nargs="+", help="sites as kind.layer, e.g. resid_post.15 mlp_out.3 (with --transcoder: "
                                        "mlp_in sites; default every layer's)"),
         arg("--cache", type=Path, help="activation cache folder (read where present, written where not)"),
         arg("--sweep-architecture", nargs="+", help="train these architectures side by side"),
         arg("--sweep-l1", nargs="+", type=float, help="L1 coefficients to sweep (L1 variants)"),
         arg("--sweep-k", nargs="+", type=int, help="k values to sweep (TopK variants)"),
         arg("--sweep-l0", nargs="+", type=float, help="L0 coefficients to sweep (jumprelu)"),
         arg("--sweep-ratio", nargs="+", type=float, help="dictionary ratios to sweep"),
         configs=(SaeConfig, HarvestConfig, TrainConfig), out="out/sae")
def sae_train(args) -> int:
    """Train every SAE of the sweep at every site from the same batches; one folder per SAE.

    With --transcoder: a transcoder per layer (mlp_in.L -> mlp_out.L), every layer's from one harvest.
    """
    harvest_cfg, train_cfg = config(args, HarvestConfig), config(args, TrainConfig)
    training_steps(harvest_cfg, train_cfg)
    configs = _sweep(args)
    transcoder = configs[0].transcoder
    if not args.sites and not transcoder:
        raise InputError("give --sites (kind.layer, e.g. resid_post.15), or --transcoder for one per layer")
    sites = [Site.parse(s) for s in args.sites or []]
    check_sites(sites)
    wrong = [s for s in sites if transcoder and s.kind != "mlp_in"]
    if wrong:
        raise InputError(f"a transcoder reads mlp_in (the MLP's input) and predicts mlp_out; {wrong[0]} is not an "
                         "mlp_in site (leave --sites out for every layer's)")
    lm = load_model(args)  # train_saes checks each job against its site's width before anything is written
    if transcoder and not sites:
        sites = lm.sites("mlp_in")
    jobs = [Job(site, cfg, target=Site(site.layer, "mlp_out") if transcoder else None)
            for site in sites for cfg in configs]
    world = World.from_env(lm.device)  # under torchrun: one rank per process
    paths = train_saes(lm, jobs, harvest_cfg, train_cfg, out_dir(args), args.cache, world=world)
    if world.main:
        for path in paths:
            print(f"  {path}")
        print(f"{lm.name}: trained {len(paths)} SAEs -> {out_dir(args)}" +
              (f" ({world.size} ranks)" if world.size > 1 else ""))
    return 0


SAE_FOLDER = arg("sae", type=Path, help="an SAE folder (lmscope, SAELens or sparsify layout)")
SAE_SITE = arg("--site", help="the site, if the folder does not say (kind.layer); another site than the folder's "
                               "is refused unless --force")
FORCE = arg("--force", action="store_true",
            help="use the SAE at --site or with --model even where its folder names another site or model")


def _load(args, check=None):
    """(the model, the SAE, its site) from the arguments; the SAE and site are checked before the model loads.

    ``check(sae)`` runs too before the model loads; after, the SAE is checked against the model (its site's width,
    the folder's model).
    """
    sae = load_sae(args.sae)
    asked = Site.parse(args.site) if args.site else None
    check_sae(sae, site=asked, force=args.force)
    if check is not None:
        check(sae)
    lm = load_model(args)
    return lm, sae, check_sae(sae, lm, asked, force=args.force)


@command("sae-eval",
         SAE_FOLDER, SAE_SITE, FORCE, configs=(EvalConfig,), out="out/sae-eval")
def sae_eval(args) -> int:
    """Evaluate one SAE; write eval.json and result/."""
    cfg = config(args, EvalConfig)
    lm, sae, site = _load(args)
    result = evaluate_sae(lm, sae, site, cfg)
    out = out_dir(args)
    result.save(out / "result")
    s = result.summary()
    write_json(out / "eval.json", s)
    print(f"{lm.name} {s['site']} {s['architecture']} ({s['d_sae']} latents, {s['tokens']} tokens): "
          f"FVE {s['fve']:.3f}, L0 {s['l0']:.1f}, dead {100 * s['dead']:.1f}%, CE recovered {s['ce_recovered']:.3f} "
          f"(loss {s['ce_orig']:.3f} -> {s['ce_sae']:.3f}; zero-ablated {s['ce_zero']:.3f})")
    return 0


@command("sae-features",
         SAE_FOLDER, SAE_SITE, FORCE, configs=(FeatureConfig,), out="out/sae-features")
def sae_features(args) -> int:
    """Collect every feature's examples in one pass and write the pages."""
    cfg = config(args, FeatureConfig)
    lm, sae, site = _load(args, check=lambda sae: cfg.check_features(sae.d_sae))
    result = feature_examples(lm, sae, site, cfg)
    out = out_dir(args)
    result.save(out / "result")
    index = write_feature_pages(result, out)
    print(f"{lm.name} {result.site}: {len(result.pages)} feature pages from {result.tokens} tokens -> {index}")
    return 0


@command("sae-export",
         SAE_FOLDER, SAE_SITE,
         arg("--format", dest="layout", choices=("saelens", "lmscope"), default="saelens",
             help="the layout written (default: saelens, SAELens 6's)"),
         out="out/sae-export")
def sae_export(args) -> int:
    """Read an SAE in any layout lmscope reads and write it in lmscope's or SAELens' (site and model kept)."""
    sae = load_sae(args.sae)
    site = check_sae(sae, site=Site.parse(args.site) if args.site else None)
    target = str(sae.target) if sae.transcoder and sae.target is not None else ""
    out = out_dir(args)
    save_sae(sae, out, site=str(site), model=sae.model, format=args.layout, target=target)
    print(f"{args.sae} ({sae.name}{' transcoder' if sae.transcoder else ''}, {site}"
          f"{' -> ' + target if target else ''}) -> {out} ({args.layout})")
    return 0
