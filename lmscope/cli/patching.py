"""The patching commands: ``patch`` (a clean / corrupted prompt pair) and ``ioi-features`` (Cunningham et al. §5)."""

from __future__ import annotations

from lmscope.cli.registry import arg, command, config, load_model, out_dir, save_result
from lmscope.data.ioi import ioi_pairs, read_ioi
from lmscope.errors import InputError
from lmscope.methods.patching import PatchConfig, PatchPrompts, activation_patching, answer_metric, attribution_patching
from lmscope.methods.patching.ioi import IOIConfig, ioi_features
from lmscope.methods.sae import check_sae, load_sae
from lmscope.model.sites import Site
from lmscope.model.units import coordinates
from lmscope.viz.patching import ioi_figure, ioi_report, patching_report, plot_patching
from lmscope.viz.report import HtmlReport, save_figure

BASES = ("sae", "neurons", "dims")


@command("patch",
         arg("--clean", required=True, help="the clean prompt"),
         arg("--corrupted", required=True, help="the corrupted prompt (same number of tokens)"),
         arg("--answer", required=True, help="the clean answer's text (its first token is read)"),
         arg("--wrong", help="a competing answer: metric = logit(answer) - logit(wrong); default: P(answer)"),
         arg("--attribution", action="store_true", help="also the attribution-patching estimate (one backward)"),
         configs=(PatchConfig,), out="out/patch")
def patch(args) -> int:
    """Write result/ (and attribution/), patch.json, patching.png and report.html."""
    cfg = config(args, PatchConfig)
    prompts = PatchPrompts(args.clean, args.corrupted, args.answer, args.wrong)  # before the model loads
    lm = load_model(args)
    metric = answer_metric(lm, prompts.answer, prompts.wrong)
    out = out_dir(args)
    result = activation_patching(lm, prompts.clean, prompts.corrupted, metric, cfg)
    save_result(out, result, "patch.json")
    plot_patching(result, out / "patching.png")
    report = patching_report(result)
    if args.attribution:
        approx = attribution_patching(lm, prompts.clean, prompts.corrupted, metric, cfg)
        approx.save(out / "attribution")
        patching_report(approx, report)
    report.write(out / "report.html")
    best = result.summary()["best"]
    print(f"{lm.name}: metric {result.clean_metric:.4g} clean, {result.corrupted_metric:.4g} corrupted; best cells: "
          + "; ".join(f"{k} L{b['layer']} {b.get('token', b.get('head'))!r} {b['score']:.2f}" for k, b in best.items())
          + f" -> {out}")
    return 0


@command("ioi-features",
         arg("--data", required=True, help="IOI prompt file (a JSON list of prompt / answer records)"),
         arg("--sae", help="an SAE folder (its site gives the layer); without it: neurons and dimensions only"),
         arg("--layer", type=int, help="the layer (default: the SAE's)"),
         arg("--site", help="the SAE's site (kind.layer or a TransformerLens hook name) when its folder names none"),
         arg("--bases", nargs="+", choices=BASES,
             help="unit bases to patch (default: sae, neurons and dims with --sae; neurons and dims without)"),
         configs=(IOIConfig,), out="out/ioi-features")
def ioi(args) -> int:
    """Write result/, ioi.json, ioi.png and report.html."""
    cfg = config(args, IOIConfig)
    names = list(dict.fromkeys(args.bases or [b for b in BASES if b != "sae" or args.sae]))
    if "sae" in names and not args.sae:
        raise InputError("--bases sae needs --sae: give an SAE folder, or patch only --bases neurons dims")
    if args.site and not args.sae:
        raise InputError("--site names the SAE's site; give --sae too, or leave --site out")
    sae = load_sae(args.sae) if args.sae else None
    if sae is not None and sae.transcoder:
        raise InputError(f"{args.sae} is a transcoder (it reads {sae.site} and writes {sae.target}); ioi-features "
                         "patches features where they are read and written: give an SAE")
    sae_site = check_sae(sae, site=args.site) if sae is not None else None  # the folder's, or --site's
    layer = args.layer if args.layer is not None else (sae_site.layer if sae_site else None)
    if layer is None:
        raise InputError("give --layer (patching neurons and dimensions needs a layer)")
    records = read_ioi(args.data)
    lm = load_model(args)
    if sae is not None:
        sae_site = check_sae(sae, lm, sae_site)  # its width, weights and model against the loaded one
    bases = []
    for name in names:
        if name == "sae":
            bases.append(sae.to(lm.device).units(sae_site))
        elif name == "neurons":
            bases.append(coordinates("neurons", lm.check(Site(layer, "mlp_key")), lm.d_mlp))
        elif name == "dims":
            bases.append(coordinates("dims", lm.check(Site(layer, sae_site.kind if sae_site else "resid_post")),
                                          lm.d_model))
    out = out_dir(args)
    result = ioi_features(lm, ioi_pairs(lm.tokenizer, records, seed=cfg.name_seed), bases, cfg, out=out)
    save_result(out, result, "ioi.json")
    report = ioi_report(result, HtmlReport(f"IOI features — {lm.name}"))
    save_figure(ioi_figure(result), out / "ioi.png")
    report.write(out / "report.html")
    s = result.summary()
    print(f"{lm.name}: {s['n_correct']} of {s['n_pairs']} IOI pairs answered (IO top-1 on {s['n_top1']}); "
          f"{s['n_used']} patched at {cfg.position}: " + "; ".join(
              f"{b} half the effect in {v['half_effect_units_median']:g} of {v['units']} units"
              for b, v in s["bases"].items()) + f" -> {out}")
    return 0
