"""Run the vision-language half of docs/neurons.md on SmolLM2 + DINOv2 + a trained projector, and write it.

    python docs/make_vlm_page.py --projector out/projector [--concepts 6] [--random-sets 10]

For held-out renderings of concepts the model captions correctly: the caption, the top neurons behind its head
noun by gradient x activation of the word's logit summed over the image tokens (the patch maps' neurons, checked by
occlusion against random patches and a blank image) and, listed apart, by forward contribution at the predicting
position; sensitivity in the paper's three senses (other renderings, the word as text, the image's patches
shuffled), specificity (other concepts' images), and the causal effect on the caption (each set zero-ablated
against random sets). Writes docs/neurons-vlm.md and docs/figures/vlm-*.png; results under out/vlm-doc/.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
from pathlib import Path

import torch

from lmscope import load_result
from lmscope.data.images import emoji_concepts, emoji_font, emoji_glyph, render, shape_concepts
from lmscope.io import load_tensors
from lmscope.methods.neurons import (
    AblationConfig,
    NeuronConfig,
    OcclusionConfig,
    ablate_neurons,
    occlusion_check,
    sensitivity,
)
from lmscope.methods.neurons.vision import caption_targets, find_image_neurons
from lmscope.methods.projector import ProjectorConfig
from lmscope.methods.projector.train import caption as caption_images
from lmscope.methods.projector.train import names_concept
from lmscope.model.lm import LM
from lmscope.model.loading import REGISTRY, ensure_converted
from lmscope.model.vision import dinov2_folder
from lmscope.model.vlm import build_llava
from lmscope.viz.neurons import patch_figure
from lmscope.viz.report import save_figure

DOCS = Path(__file__).resolve().parent
DATA = (
    "Data, all drawn offline: the 1,154 emoji of Debian's fonts-noto-color-emoji in the Unicode blocks 1F300-1F5FF, "
    "1F680-1F6FF, 1F900-1F9FF, 1FA70-1FAFF and 2600-26FF, rendered with Pillow on a random light background colour, "
    "position, size and angle and captioned \"a/an <Unicode name in lower case>\", plus 32 coloured shapes (8 colours "
    "x circle, square, triangle, star; \"a red circle\"). 10% of the concepts are held out of training; every epoch "
    "draws new renderings (seeds 1..), the evaluation uses seeds from 10,000 and this page from 20,000. The trained "
    "weights ship as `lmscope/model/assets/smollm2-dino-projector.safetensors`; `lmscope.load(\"smollm2-dino\")` "
    "assembles the model once into the cache.")
SEED = 20_000  # renderings never used in training (epochs use seeds 1..) or in its evaluation (10,000..)


def load_vlm(projector: Path, config: ProjectorConfig) -> LM:
    """SmolLM2 + DINOv2 with the projector trained by ``lmscope vlm train-projector --out projector``."""
    model, processor = build_llava(ensure_converted(REGISTRY["smollm2-135m"]), dinov2_folder(), config.projector,
                                   config.image_size, config.image_token)
    model.model.multi_modal_projector.load_state_dict(load_tensors(projector / "projector.safetensors"))
    return LM(model, processor.tokenizer, name="smollm2-dino", processor=processor)


def row(lm: LM, image, prompt: str, prefix: str) -> dict:
    """Image + prompt + the caption's words before the scored one (one input row)."""
    return dict(lm.processor(images=image, text=f"{prompt} {prefix}".rstrip(), return_tensors="pt"))


def shuffled(image, patch: int = 14, seed: int = 0):
    """The image with its patch grid shuffled (region invariance)."""
    from PIL import Image

    side = image.size[0] // patch
    tiles = [image.crop((c * patch, r * patch, (c + 1) * patch, (r + 1) * patch)) for r in range(side)
             for c in range(side)]
    random.Random(seed).shuffle(tiles)
    out = Image.new("RGB", image.size)
    for i, tile in enumerate(tiles):
        out.paste(tile, ((i % side) * patch, (i // side) * patch))
    return out


def study(lm: LM, prompt: str, concept, others: list, font, k: int, random_sets: int, index: int, out: Path) -> dict:
    """Caption one held-out rendering of ``concept`` after the projector's own ``prompt``; its head noun's neurons,
    sensitivity, specificity, causality."""
    image = render(concept, 112, SEED, font)
    caption, batch, targets, words = caption_targets(lm, image, prompt)
    res = find_image_neurons(lm, batch, targets, NeuronConfig(top_k=k), texts=[f"{prompt} -> {w}" for w in words])
    b = len(words) - 1  # the last content word: the head noun of "a red apple"
    res.save(out / f"concept-{index}")
    occlusion = occlusion_check(lm, batch, res, b, OcclusionConfig(maps=4, draws=random_sets))
    occlusion.save(out / f"occlusion-{index}")
    save_figure(patch_figure(res, image, b, caption=caption, occlusion=occlusion),
                DOCS / "figures" / f"vlm-{index}.png")
    prefix = caption[: caption.lower().rfind(words[b].lower())].strip()
    neurons = [[t["layer"], t["neuron"]] for t in res.top_image[b]]  # the patch maps' neurons
    same = [row(lm, render(concept, 112, SEED + s, font), prompt, prefix) for s in range(1, 6)]
    text_only = prompt.replace(lm.processor.image_token, "").strip()  # the same prompt without its image
    text = [dict(lm.tokenizer(f"{text_only} {prefix}".rstrip(), return_tensors="pt"))]
    regions = [row(lm, shuffled(image, seed=s), prompt, prefix) for s in range(3)]
    other = [row(lm, render(c, 112, SEED, font), prompt, prefix) for c in others]
    checks = {name: sensitivity(lm, neurons, group, other if name == "visual" else [], site=site)
              for name, group, site in (("visual", same, "image"), ("textual", text, "last"),
                                        ("regions", regions, "image"))}
    lengths = batch["attention_mask"].sum(1).tolist()
    rows = [{"input_ids": batch["input_ids"][i:i + 1, :n], "attention_mask": batch["attention_mask"][i:i + 1, :n],
             "pixel_values": batch["pixel_values"][i:i + 1]} for i, n in enumerate(lengths)]
    ablation = AblationConfig(random_sets=random_sets, new_tokens=8)
    causal = {name: ablate_neurons(lm, found, ablation, inputs=rows).summary()
              for name, found in (("image", dataclasses.replace(res, top=res.top_image)), ("contribution", res))}
    return {"concept": concept.caption, "caption": caption, "word": words[b], "result": res, "b": b,
            "checks": checks, "causal": causal, "occlusion": occlusion, "image": f"figures/vlm-{index}.png"}


def recipe(training, minutes: float | None, notes: list[str]) -> list[str]:
    """How the projector was trained: the command's settings, read from the run's own config."""
    c, steps = training.config, len(training.losses)
    kind = ("an MLP 384 -> 576 -> 576 with a GELU between (LLaVA-1.5's)" if c.projector == "mlp" else
            "a linear map 384 -> 576 (LiMBeR's)")
    took = f", {minutes:.0f} minutes on the 2-core CPU" if minutes else ""
    concepts = (f"{training.train_concepts} training concepts drawn at random" if c.max_concepts else
                f"all {training.train_concepts} training concepts")
    return ["## How it was trained", "",
            f"`lmscope vlm train-projector --projector {c.projector} --max-concepts {c.max_concepts} --epochs "
            f"{c.epochs} --batch-size {c.batch_size} --out out/projector`: {kind}; AdamW lr {c.lr:g} with "
            f"{c.warmup_steps} warm-up steps then a {c.schedule} schedule, batch {c.batch_size}, {c.epochs} epochs "
            f"over {concepts} = {steps} steps{took}; renderings turned by up to {c.rotation:g} degrees; LM and vision "
            f"encoder frozen; the loss is the caption tokens' cross-entropy after `{c.prompt!r}` (SmolLM2-Instruct's "
            "chat format); the projector starts from centred, scaled patch features at a token embedding's norm "
            "(without that, a first run produced image tokens at 20x a token's norm, 0.86 cosine apart across "
            "images). Final training loss "
            f"{training.losses[-1]:.3f}. {DATA}", "", *[line for note in notes for line in (note, "")]]


def collapse(training) -> str:
    """Say plainly how varied the captions are and what the model reads, from the numbers."""
    from collections import Counter

    counts = Counter(r["generated"] for r in training.heldout)
    top = counts.most_common(5)
    share = sum(n for _, n in top) / max(1, len(training.heldout))
    listed = ", ".join(f'"{c}" ({n})' for c, n in top)
    s = training.summary()
    seen, unseen = s["seen"]["named"], s["unseen"]["named"]
    verdict = (f"Plainly: it names what it was trained on ({seen:.0%} of new renderings of seen concepts)"
               if seen >= 0.6 else f"Plainly: it names only {seen:.0%} of new renderings of seen concepts; it does "
               "not reliably see which one it is looking at")
    verdict += (f"; concepts it never saw it names {unseen:.0%} of the time: it does not generalise beyond its "
                "training vocabulary" if unseen < 0.2 else f"; concepts it never saw {unseen:.0%}")
    return (f"{len(counts)} different captions for {len(training.heldout)} images; the five most frequent ({listed}) "
            f"cover {share:.0%} of them. {verdict}.")


def plain_style(concept, font):
    """An emoji in a style training never drew: upright, full size (109 px), centred on a white 136 x 128 canvas."""
    from PIL import Image

    canvas = Image.new("RGBA", (136, 128), (255, 255, 255, 255))
    glyph = emoji_glyph(concept.key, font)
    canvas.alpha_composite(glyph, ((136 - glyph.width) // 2, (128 - glyph.height) // 2))
    return canvas.convert("RGB")


def other_style(lm: LM, training, font, n: int) -> list[str]:
    """Seen and unseen emoji drawn in :func:`plain_style`: how often the caption names them."""
    by_caption = {c.caption: c for c in emoji_concepts(font)}
    lines = ["## In a style training never drew", "",
             "Emoji drawn upright at their full 109 px, centred on a white 136 x 128 canvas (not square: the processor "
             "resizes the short side and crops the centre), the way the issue that asked for this projector checked "
             "the last one. Named: the caption holds a noun of the concept's name (not an article, a colour or a "
             "generic word such as \"face\").", "", "| concepts | images | named | examples |", "|---|---|---|---|"]
    for seen in (True, False):
        group = [by_caption[r["caption"]] for r in training.heldout
                 if r["seen"] == seen and r["caption"] in by_caption][:n]
        said = caption_images(lm.model, lm.processor, [plain_style(c, font) for c in group], training.config)
        named = [names_concept(c, g) for c, g in zip(group, said)]
        examples = "; ".join(f"{c.caption} -> {g}" for c, g in list(zip(group, said))[:4])
        lines.append(f"| {'seen' if seen else 'never seen'} in training | {len(group)} | "
                     f"{sum(named) / max(1, len(named)):.2f} | {examples} |")
    return lines + [""]


PYTHON_API = ["## From Python", "",
              "```python",
              "import lmscope",
              "from lmscope.model.loading import VLM_REGISTRY",
              "from PIL import Image",
              "",
              "lm = lmscope.load(\"smollm2-dino\")",
              "image = Image.open(\"apple.png\")",
              "prompt = VLM_REGISTRY[\"smollm2-dino\"].prompt  # the caption prompt its projector was trained with",
              "caption, inputs, targets, words = lmscope.caption_targets(lm, image, prompt)",
              "result = lmscope.find_image_neurons(lm, inputs, targets, lmscope.NeuronConfig(top_k=10), texts=words)",
              "result.top_image[0]       # word 0's neurons by gradient x activation over the image tokens",
              "result.top[0]             # listed apart: by forward contribution at the predicting position",
              "result.image_map(0, 0)    # word 0's first image neuron: its activation over the patch grid",
              "lmscope.neurons.occlusion_check(lm, inputs, result, 0).summary()  # its brightest patches covered",
              "neurons = [[t[\"layer\"], t[\"neuron\"]] for t in result.top_image[0]]",
              "lmscope.neurons.sensitivity(lm, neurons, same, other, site=\"image\")  # inputs of other images, "
              "read at their patches",
              "lmscope.load_result(\"out/vlm-neurons\")   # a command's --out folder loads too",
              "```", "",
              "Gradient x activation differentiates the target token's logit (not its log-probability): the MLP key "
              "times d logit / d key, summed over the image positions (found through `config.image_token_id`). The "
              "forward contribution is the key at the predicting position times (W_U W_out)[word, neuron].", ""]


def page(training, studies: list[dict], styled: list[str], minutes: float | None, notes: list[str]) -> str:
    s = training.summary()
    kind = "an MLP projector" if training.config.projector == "mlp" else "a linear projector"
    lines = ["# Neurons that write a token (images)", "",
             "The bundled vision-language model: SmolLM2-135M (frozen) reads DINOv2-S/14's 64 patch features (frozen, "
             f"112 x 112 px) through {kind} trained with `lmscope vlm train-projector` on rendered emoji and "
             "coloured shapes captioned from their names. Generated by `python docs/make_vlm_page.py`.", "",
             *recipe(training, minutes, notes), *PYTHON_API,
             "## What it can caption", "",
             f"New renderings (other seeds: backgrounds, sizes, positions, angles) of {s['seen']['images']} training "
             f"concepts: the caption names the concept {s['seen']['named']:.2f}, exact caption "
             f"{s['seen']['exact']:.2f}, word recall {s['seen']['word_recall']:.2f}. {s['unseen']['images']} concepts "
             f"never trained on: named {s['unseen']['named']:.2f}, exact {s['unseen']['exact']:.2f}, word recall "
             f"{s['unseen']['word_recall']:.2f}. Between 40 images of different seen concepts, the first caption "
             f"token's distribution moves by a mean total variation of {s['first_word_tv']:.2f} (mostly the article); "
             f"the token after \" a\" by {s['noun_tv']:.2f} (0: the image is not read; 1: disjoint predictions).", "",
             collapse(training), "", *styled,
             "| concept | seen in training | generated | caption words right |", "|---|---|---|---|"]
    best = sorted(training.heldout, key=lambda r: -r["recall"])[:8]
    for r in best + [r for r in training.heldout if r["seen"] and r not in best][:6]:
        lines.append(f"| {r['caption']} | {'yes' if r['seen'] else 'no'} | {r['generated']} | {r['recall']:.2f} |")
    lines += ["", "## Neurons behind the nouns", "",
              "For each studied image: its caption, then the last content word's top neurons by gradient x "
              "activation summed over the 64 image tokens (Schwettmann et al.'s g; the gradient of the word's logit, "
              "not its log-probability): only these have a path from a patch to the word, so only these get patch "
              "maps. A neuron of the last layer at an image token cannot reach the predicting position at all (its "
              "g is exactly 0). Listed apart: the top neurons by forward contribution at the predicting position "
              "(Pan et al.), which say what is written into the word's logit there, not where in the image it comes "
              "from. Patch maps: each image neuron's activation over the patches, one colour scale per figure, the "
              "top 5% outlined; each is checked by occlusion (its brightest 5% of patches filled with the image's "
              "mean colour in the model's input, against as many random patches, and P(word) on a blank image as "
              "the control).", "", occlusion_tally(studies), ""]
    for st in studies:
        lines += study_lines(st)
    lines += ["Other Hugging Face VLM families (LLaVA-NeXT, Idefics3 / SmolVLM, Qwen2-VL / Qwen2.5-VL, Gemma 3, "
              "PaliGemma): what loads, what is checked, and how image tokens map back to pixels: "
              "[docs/vlm-families.md](vlm-families.md).", ""]
    return "\n".join(lines)


def neuron_rows(tops: list[dict]) -> list[str]:
    """A markdown table of neurons: both scores, their ranks and what W_U w_out writes toward."""
    rows = ["| neuron | grad x act (image) | rank | contribution | rank | W_U w_out: top tokens |",
            "|---|---|---|---|---|---|"]
    return rows + [f"| L{t['layer']}.{t['neuron']} | {t['gradxact']:.3g} | {t['rank_gradxact']} | "
                   f"{t['contribution']:.3g} | {t['rank_contribution']} | "
                   f"{' '.join(repr(v) for v in t['vocab'][:5])} |" for t in tops]


def occlusion_lines(occ) -> list[str]:
    """The occlusion check of one figure's maps: each map's drop against the random sets', and the blank image."""
    s = occ.summary()
    lines = [f"Occlusion (P({occ.word!r}) = {occ.prob:.3f}; patches covered: {occ.patches}; blank image "
             f"{occ.prob_blank:.3f}; {len(occ.prob_random)} random sets of {occ.patches} patches: mean drop "
             f"{s['random_drop']:.3f}):", "", "| map | P drop, its brightest patches covered | beats random |",
             "|---|---|---|"]
    return lines + [f"| L{m['layer']}.{m['neuron']} | {m['drop']:.3f} | {'yes' if m['beats_random'] else 'no'} |"
                    for m in s["maps"]]


def causal_text(name: str, c: dict) -> str:
    """One sentence: zero-ablating a neuron set against random sets of the same size."""
    return (f"Zero-ablating the {name} neurons: the word stays in the caption {c['generated_after']:.2f} (random "
            f"sets: {c['random_generated']:.2f}), P drops {c['prob_drop']:.3f} (random {c['random_prob_drop']:.3f}).")


def study_lines(st: dict) -> list[str]:
    """The page's section of one studied image."""
    res, b = st["result"], st["b"]
    prefix = res.prefixes[b] if res.prefixes else res.prompts[b]
    lines = [f"### {st['concept']} -> \"{st['caption']}\"", "",
             f"Scored word {st['word']!r} after {prefix!r}.", "", f"![patch maps]({st['image']})", "",
             "Neurons of the patch maps (by gradient x activation over the image tokens):", "",
             *neuron_rows(res.top_image[b][:5]), "", *occlusion_lines(st["occlusion"]), "",
             "Listed apart, by forward contribution at the predicting position:", "", *neuron_rows(res.top[b][:5])]
    vis, txt, reg = st["checks"]["visual"], st["checks"]["textual"], st["checks"]["regions"]
    return lines + ["", f"Sensitivity of the image neurons (fires = its peak over the image's patches is in the top "
                    f"1% of its layer's): other renderings {vis.sensitivity:.2f}, patches shuffled "
                    f"{reg.sensitivity:.2f}; specificity on other concepts' images {vis.specificity:.2f}; at the "
                    f"predicting position of the caption as text without the image {txt.sensitivity:.2f}. "
                    f"{causal_text('image', st['causal']['image'])} "
                    f"{causal_text('contribution', st['causal']['contribution'])}", ""]


def occlusion_tally(studies: list[dict]) -> str:
    """How many maps pass the occlusion check, and how often one neuron recurs among the words' top 5."""
    from collections import Counter

    maps = [m for st in studies for m in st["occlusion"].summary()["maps"]]
    tops = Counter((t["layer"], t["neuron"]) for st in studies for t in st["result"].top_image[st["b"]][:5])
    (layer, neuron), most = tops.most_common(1)[0] if tops else ((0, 0), 0)
    return (f"{sum(m['beats_random'] for m in maps)} of {len(maps)} patch maps lower P(word) more when their "
            f"brightest patches are covered than as many random patches do. The most frequent image neuron, "
            f"L{layer}.{neuron}, is in the top 5 of {most} of the {len(studies)} words.")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--projector", type=Path, default=Path("out/projector"))
    parser.add_argument("--concepts", type=int, default=6)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--random-sets", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("out/vlm-doc"))
    parser.add_argument("--styled", type=int, default=100, help="seen and unseen emoji drawn in another style")
    parser.add_argument("--train-minutes", type=float, default=None,
                        help="the training's wall time, for a run whose result predates its record")
    parser.add_argument("--note", action="append", default=[], help="a paragraph for the recipe (repeatable)")
    args = parser.parse_args()
    torch.manual_seed(0)
    training = load_result(args.projector / "result")
    lm = load_vlm(args.projector, training.config)
    font = emoji_font()
    by_caption = {c.caption: c for c in emoji_concepts(font) + shape_concepts()}
    seen = [r["caption"] for r in training.heldout if r["seen"]]
    # the concepts it captions best (exact, else the most caption words right), else simply the first ones
    best = sorted((r for r in training.heldout if r["recall"] > 0), key=lambda r: (-r["exact"], -r["recall"]))
    exact = list(dict.fromkeys(r["caption"] for r in best))[: args.concepts] or seen[: args.concepts]
    others = [by_caption[r["caption"]] for r in training.heldout if r["seen"] and r["caption"] not in exact][:5]
    studies = [study(lm, training.config.prompt, by_caption[c], others, font, args.top_k, args.random_sets, i, args.out)
               for i, c in enumerate(exact)]
    minutes = training.seconds / 60 if training.seconds else args.train_minutes
    styled = other_style(lm, training, font, args.styled)
    (DOCS / "neurons-vlm.md").write_text(page(training, studies, styled, minutes, args.note))
    print(f"wrote {DOCS / 'neurons-vlm.md'} ({len(studies)} concepts)")


if __name__ == "__main__":
    main()
