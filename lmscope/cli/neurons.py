"""The neuron commands: ``neurons find`` (attribution, causal check, sensitivity) and ``neurons edit``.

An image (``neurons find --image``) is read by :func:`lmscope.data.images.read_image`: its size is checked from the
header before the model loads.
"""

from __future__ import annotations

import torch

from lmscope.cli.operations import param_arg, params_of
from lmscope.cli.registry import arg, command, config, load_model, out_dir, save_result
from lmscope.data.images import read_image
from lmscope.errors import InputError
from lmscope.io import write_json
from lmscope.methods.neurons import (
    AblationConfig,
    CaptionConfig,
    NeuronConfig,
    NeuronEditConfig,
    ablate_neurons,
    neuron_edit,
    sensitivity,
)
from lmscope.methods.neurons.vision import caption_targets, find_image_neurons, occlusion_check
from lmscope.model.generate import greedy
from lmscope.model.loading import VLM_REGISTRY
from lmscope.model.tokens import target_ids
from lmscope.ops import NEURONS
from lmscope.ops.neurons import DEFAULT_PROMPT
from lmscope.viz.neurons import ablation_report, edit_report, neurons_report, patch_figure
from lmscope.viz.report import save_figure


@command("neurons",
         *(param_arg(p) for p in NEURONS.params),
         arg("--ablate", action="store_true", help="ablate the top neurons and as many random ones (control)"),
         arg("--image", help="an image: caption it with a vision-language model and score the neurons behind each "
                             "content word of the caption (the prompt then follows the image)"),
         arg("--same", nargs="+", default=[], help="other prompts of the same concept (sensitivity)"),
         arg("--other", nargs="+", default=[], help="prompts of other concepts (specificity)"),
         configs=(NeuronConfig, AblationConfig, CaptionConfig), out="out/neurons")
def neurons(args) -> int:
    """Write result/, neurons.json, neurons.png, report.html (+ ablation/, sensitivity/ when asked)."""
    cfg, acfg, ccfg = config(args, NeuronConfig), config(args, AblationConfig), config(args, CaptionConfig)
    params = params_of(NEURONS, args)  # the workbench's operation: the same checks, run and run folder
    if args.image:
        text_only = [flag for flag, given in (("--target", args.target), ("--ablate", args.ablate),
                                              ("--same", args.same), ("--other", args.other)) if given]
        if text_only:
            raise InputError(f"{', '.join(text_only)} cannot go with --image (the caption's content words are the "
                             "targets, and the causal checks run on text prompts): drop them or the image")
        return _image(args, cfg, ccfg, read_image(args.image))
    lm = load_model(args)
    result = NEURONS.run(lm, params, cfg)
    out = out_dir(args)
    NEURONS.write(result, out)
    for line in NEURONS.report(result):
        print(line)
    if args.ablate or args.same or args.other:
        _checks(args, lm, result, cfg, acfg, out)
    print(f"wrote {out}/neurons.json, neurons.png, report.html and result/")
    return 0


def _checks(args, lm, result, cfg: NeuronConfig, acfg: AblationConfig, out) -> None:
    """The causal check and sensitivity / specificity, added to the run folder and its report."""
    report = neurons_report(result)
    if args.ablate:
        ab = ablate_neurons(lm, result, acfg)
        save_result(out / "ablation", ab, "ablation.json")
        ablation_report(ab, report)
        s = ab.summary()
        spread = f" +- {s['random_prob_drop_std']:.4f}" if s["random_prob_drop_std"] is not None else ""
        sets = f"{acfg.random_sets} random sets" if acfg.random_sets > 1 else "1 random set"
        print(f"ablating the top {cfg.top_k} ({acfg.mode}): P drops {s['prob_drop']:.4f} ({sets}: "
              f"{s['random_prob_drop']:.4f}{spread}); still generated {s['generated_after']:.0%} (random "
              f"{s['random_generated']:.0%})")
    if args.same or args.other:
        sens = sensitivity(lm, [[t["layer"], t["neuron"]] for t in result.top[0]], args.same, args.other)
        save_result(out / "sensitivity", sens, "sensitivity.json")
        report.heading("Sensitivity and specificity").table(
            ["quantity", "value"], [[k, v] for k, v in sens.summary().items()])
        measured = [f"{name} {value:.2f} over {len(prompts)} prompts" for name, value, prompts in
                    (("sensitivity", sens.sensitivity, args.same), ("specificity", sens.specificity, args.other))
                    if prompts]
        print(", ".join(measured))
    report.write(out / "report.html")


def _image(args, cfg: NeuronConfig, ccfg: CaptionConfig, image) -> int:
    """``neurons --image``: caption, then the neurons behind each content word, with patch maps."""
    lm = load_model(args)
    token = lm.processor.image_token if lm.processor is not None else ""
    bundled = VLM_REGISTRY.get(args.model)  # its projector's own caption prompt; others get a plain one
    plain = bundled.prompt if bundled is not None else f"{token} A picture of"
    prompt = args.prompt if args.prompt != DEFAULT_PROMPT else plain
    if token and token not in prompt:
        prompt = f"{token} {prompt}"
    if token and prompt.count(token) > 1:
        raise InputError(f"the prompt holds the image token {token!r} {prompt.count(token)} times; give it once "
                         "(where the image goes)")
    notes: list[str] = []
    caption, inputs, targets, words = caption_targets(lm, image, prompt, ccfg.caption_tokens, notes)
    result = find_image_neurons(lm, inputs, targets, cfg, texts=[f"{prompt} -> {w}" for w in words])
    result.notes += [f"caption: {caption!r}", *notes]
    out = out_dir(args)
    save_result(out, result, "neurons.json")
    report = neurons_report(result)
    checks = [occlusion_check(lm, inputs, result, b) for b in range(len(words))] if result.top_image else []
    for b, word in enumerate(words):
        name = f"patches-{b}.png"
        if result.top_image:
            save_figure(patch_figure(result, image, b, caption=caption, occlusion=checks[b]), out / name)
            checks[b].save(out / f"occlusion-{b}")
            report.heading(f"Patches: {word!r}").figure(out / name)
    report.write(out / "report.html")
    print(f"{lm.name}: caption {caption!r}")
    for b, word in enumerate(words):
        top = result.top[b][0]
        line = (f"  {word!r}: P = {result.target_prob[b]:.3f}; top contribution at the predicting position "
                f"L{top['layer']}.{top['neuron']} (writes {top['vocab'][:3]})")
        if result.top_image:
            img, occ = result.top_image[b][0], checks[b]
            line += (f"; top over the patches L{img['layer']}.{img['neuron']}, its brightest patches covered: "
                     f"P drops {occ.drops()[0]:.3f} (random patches {occ.random_drop():.3f}; blank image P "
                     f"{occ.prob_blank:.3f})")
        print(line)
    print(f"wrote {out}/neurons.json, {'patches-*.png, occlusion-*/, ' if result.top_image else ''}report.html and "
          "result/")
    return 0


@torch.no_grad()
def _probe(lm, prompt: str, v0: int, v1: int, new_tokens: int) -> tuple[float, float, str]:
    """(P(v0), P(v1)) at the prompt's last token and its greedy continuation."""
    probs = lm(prompt)[0, -1].float().softmax(-1)
    return float(probs[v0]), float(probs[v1]), greedy(lm, prompt, new_tokens)


@command("neuron-edit",
         arg("--layer", type=int, required=True, help="the neuron's layer"),
         arg("--neuron", type=int, required=True, help="the neuron's index in the MLP"),
         arg("--v0", required=True, help="the token it writes now, e.g. ' Paris'"),
         arg("--v1", required=True, help="the token it should write, e.g. ' Rome'"),
         arg("--prompt", help="the prompt whose activation weighs the edit (also checked)"),
         arg("--prompts", nargs="+", default=[], help="more prompts where v1 should now appear"),
         arg("--neighbours", nargs="+", default=[], help="prompts that should not change"),
         arg("--new-tokens", type=int, default=8, help="tokens generated per prompt"),
         configs=(NeuronEditConfig,), out="out/neuron-edit")
def edit(args) -> int:
    """Edit, measure on every prompt before and after, write edit/, checks.json and report.html, then undo."""
    cfg = config(args, NeuronEditConfig)
    lm = load_model(args)
    v0, v1 = target_ids(lm, args.v0)[0], target_ids(lm, args.v1)[0]
    prompts = [("edit", p) for p in ([args.prompt] if args.prompt else []) + args.prompts]
    prompts += [("neighbour", p) for p in args.neighbours]
    before = [_probe(lm, p, v0, v1, args.new_tokens) for _, p in prompts]
    with neuron_edit(lm, args.layer, args.neuron, args.v0, args.v1, args.prompt, cfg) as handle:
        after = [_probe(lm, p, v0, v1, args.new_tokens) for _, p in prompts]
    out = out_dir(args)
    handle.edit.save(out / "edit")
    checks = [{"prompt": p, "kind": kind, "p_v0": [b[0], a[0]], "p_v1": [b[1], a[1]], "text": [b[2], a[2]],
               "v1_generated": [args.v1.strip() in b[2], args.v1.strip() in a[2]]}
              for (kind, p), b, a in zip(prompts, before, after)]
    write_json(out / "checks.json", {"edit": handle.edit.summary(), "checks": checks})
    edit_report(handle.edit, checks).write(out / "report.html")
    e = handle.edit
    print(f"{lm.name}: L{e.layer}.{e.neuron} contribution to {e.v0!r} / {e.v1!r}: "
          f"{e.contribution_before[0]:+.4g} / {e.contribution_before[1]:+.4g} -> {e.contribution_after[0]:+.4g} / "
          f"{e.contribution_after[1]:+.4g} (|delta w| {float(e.delta.norm()):.3g})")
    for c in checks:
        print(f"  [{c['kind']}] {c['prompt']!r}: P(v1) {c['p_v1'][0]:.4f} -> {c['p_v1'][1]:.4f}; "
              f"{c['text'][0]!r} -> {c['text'][1]!r}")
    print(f"wrote {out}/edit/, checks.json and report.html (the model in memory is restored)")
    return 0
