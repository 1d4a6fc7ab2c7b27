"""Neuron attribution speed: forward contribution for every layer vs one plain forward, and one VLM image.

1. smollm2-135m, a batch of 32 known facts (ROME's known_1000, right-padded): one plain forward of the batch vs
   ``find_neurons(method="contribution")`` (all 30 layers x 1,536 neurons for each prompt's own next token,
   top-k with their vocabulary) in one batch; gradient x activation and both methods for reference.
2. The bundled vision-language model (smollm2-dino): one rendered emoji captioned and the neurons behind each
   content word of its caption scored by both methods, with the patch maps.

Writes bench/results/neurons-smollm2-135m-cpu.md (and .json).

    python bench/bench_neurons.py [--data ../shared/data/known_1000.json] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

import lmscope  # noqa: E402
from lmscope.data.facts import load_known_facts  # noqa: E402
from lmscope.data.images import emoji_concepts, emoji_font, render  # noqa: E402
from lmscope.methods.neurons import NeuronConfig, find_neurons  # noqa: E402
from lmscope.methods.neurons.vision import caption_targets, find_image_neurons  # noqa: E402
from lmscope.model.loading import VLM_REGISTRY  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def timed(fn, rounds: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def text_bench(args) -> dict:
    lm = lmscope.load("smollm2-135m")
    prompts = [f.prompt for f in load_known_facts(args.data, 32)]
    inputs = lm.tokenize(prompts)

    @torch.no_grad()
    def forward():
        lm(inputs)

    row = {"prompts": len(prompts), "padded_tokens": int(inputs["input_ids"].numel()),
           "layers": lm.n_layers, "d_mlp": lm.d_mlp, "forward_s": timed(forward, args.rounds)}
    for method in ("contribution", "gradxact", "both"):
        cfg = NeuronConfig(method=method)
        row[f"{method}_s"] = timed(lambda cfg=cfg: find_neurons(lm, prompts, None, cfg, batch_size=32), args.rounds)
    return row


def vlm_bench() -> dict:
    lm = lmscope.load("smollm2-dino")
    font = emoji_font()
    concept = next(c for c in emoji_concepts(font) if c.caption == "a shooting star")  # one of its 256 concepts
    image = render(concept, 112, 20_000, font)
    t = time.perf_counter()
    caption, batch, targets, words = caption_targets(lm, image, VLM_REGISTRY["smollm2-dino"].prompt)
    t_caption = time.perf_counter() - t
    result = find_image_neurons(lm, batch, targets, NeuronConfig(method="both"))
    t_total = time.perf_counter() - t
    return {"image": concept.caption, "caption": caption, "words": words, "caption_s": t_caption,
            "image_total_s": t_total, "image_patches": result.grid[0] * result.grid[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "known_1000.json")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    r = {**text_bench(args), **vlm_bench()}
    f = r["forward_s"]
    lines = [f"# Neuron attribution, smollm2-135m on CPU ({platform.node()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads)", "",
             f"`python bench/bench_neurons.py --rounds {args.rounds}` (medians of {args.rounds}, after a warm-up)", "",
             f"{r['prompts']} known facts in one right-padded batch ({r['padded_tokens']} token positions); every "
             f"neuron of {r['layers']} layers x {r['d_mlp']} scored for each prompt's own next token.", "",
             "| what | seconds | x plain forward | target |", "|---|---|---|---|",
             f"| plain forward of the batch | {f:.3f} | 1.00 | |",
             f"| forward contribution, all layers (`--method contribution`) | {r['contribution_s']:.3f} | "
             f"{r['contribution_s'] / f:.2f} | <= 1.5 |",
             f"| gradient x activation (one backward) | {r['gradxact_s']:.3f} | {r['gradxact_s'] / f:.2f} | |",
             f"| both (the default) | {r['both_s']:.3f} | {r['both_s'] / f:.2f} | |", "",
             f"One image on smollm2-dino ({r['image']!r}, {r['image_patches']} patches): caption "
             f"{r['caption']!r} in {r['caption_s']:.1f} s; caption + both scores for its {len(r['words'])} content "
             f"word(s) in {r['image_total_s']:.1f} s (target: seconds).", ""]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "neurons-smollm2-135m-cpu.md").write_text("\n".join(lines))
    (RESULTS / "neurons-smollm2-135m-cpu.json").write_text(json.dumps(r, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
