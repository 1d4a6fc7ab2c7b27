"""Write docs/lenses.md and its figures from finished ``lmscope lens train`` and ``lmscope lens eval`` runs.

    python docs/make_lens_page.py out/lens-train-smollm2 out/lens-eval-smollm2 out/lens-train-gemma3 \
        out/lens-eval-gemma3
    python docs/make_lens_page.py --keep smollm2-135m out/lens-train-gemma3 out/lens-eval-gemma3

Arguments come in pairs (a training folder, then the comparison folder of the same model); ``--keep MODEL`` copies
that model's section (and its figures, already in docs/figures/) from the current page instead, for a model whose
run folders are not on this machine. Per model the page gives
the training command, its tokens, steps and time, the held-out KL to the final layer and the top-1 agreement of
the logit and the tuned lens at every layer (the tuned lens paper's main comparison), and the layers where the
tuned lens does not win, if any; the comparison and training figures are copied to docs/figures/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pagekit import kept_section

from lmscope import load_result
from lmscope.viz.lens import comparison_figure, training_figure
from lmscope.viz.report import save_figure

DOCS = Path(__file__).resolve().parent


NOTES = {  # what was seen in the runs behind the page (measured there; rewrite them with new runs)
    "smollm2-135m": (
        "The 30.2 minutes are wall-clock on a machine that ran this project's tests beside the training for most of "
        "its steps (3.4-3.7 s a step alone, up to 5 s under that load: about 27 minutes alone). SmolLM2 ties its "
        "embeddings, so the logit lens reads the embeddings as the current token itself (107 nats from the next-token"
        " distribution); the tuned lens' translator undoes most of that (6.5 nats). Its lead is largest in the middle"
        " layers (about 20 nats down to 3-4), and its top-1 agreement with the model is two to four times the logit "
        "lens' until the last few blocks. A longer read for the issue's 'few million tokens': `lmscope --model "
        "smollm2-135m lens train --corpus wiki+bbc+sotu+kjv --tokens 2097152 --position-fraction 0.025 --optimizer "
        "sgd` read 2,097,152 tokens in 40.8 minutes alone on this machine (857 tokens/s, 2.4 s a step; "
        "out/lens-train-smollm2-fast), and its held-out mean KL is 3.43 nats (8,080 wiki positions; `lens eval`: "
        "out/lens-eval-smollm2-fast), a little worse than the 3.18 of the run above: it trained 52k positions to this"
        " run's 95k, three quarters of them outside Wikipedia. A step of 2,048 tokens took 2.4 s at a fortieth of the"
        " positions against 3.5 s at a tenth: the unembedding of the trained positions (49,152 x 576 per position and"
        " layer, forward and backward) costs about 1.5 s at a tenth, and what is left, about 2 s, is the model's "
        "forward pass with its 31 streams captured. Reading faster on this CPU would need a faster forward, and a "
        "tuned lens learns from positions trained, not tokens read. The store keeps the run above."
    ),
    "gemma3-270m": (
        "This run is float32 on a 2-core AMD EPYC with AVX2 only (no native bfloat16): 41 s a step. The run it "
        "replaces (`--optimizer sgd`, then the default) took 12 s a step in bfloat16 autocast on a CPU with native "
        "bfloat16, and its held-out mean KL was 13.41 nats; it did not beat the logit lens at block 16's output (0.94"
        " against 0.59 nats): that translator was thrown from 0.55 to 53 nats at step 35 and came back only to 0.90, "
        "and blocks 7-10's rose to 70-110 nats before settling. With Adam no translator's training KL jumped like "
        "that (the training figure: no translator rose above 1.2x its first step's KL but block 16's, whose noisy "
        "curve stays between 0.37 and 1.8 nats on its batches, against 53 with SGD), and held out it beat the logit "
        "lens at every layer as trained: mean 6.53 nats, half SGD's, 0.492 at block 16. The held-out shrinking (764 "
        "positions of the training split after the 262,144 tokens trained on, 9.7 minutes, not counted above) kept "
        "0.75 of block 16's translator and all of every other one; on the test split that took block 16 from 0.492 to"
        " 0.443 nats (top-1 0.694 to 0.708) and left the rest as they were (eval of the unshrunk lens: "
        "out/lens-eval-gemma3-adam-unshrunk). Gemma 3 scales and ties its embeddings too: the embeddings read through"
        " the logit lens are 521 nats from the model's distribution, 41 through the tuned lens. A few million tokens "
        "in under an hour is out of reach for this model on this CPU: every trained position is read through 18 "
        "unembeddings of 262,144 x 640, forward and backward, and 262,144 tokens (26,000 trained positions) took 88 "
        "minutes; on the CPU with native bfloat16 the SGD run took 25.5 (an Adam step costs the same work; not "
        "measured there)."
    ),
}


def _flags(config: dict) -> str:
    """The non-default options of a training run, as typed."""
    from lmscope.methods.lens import TuneConfig

    default = TuneConfig().__dict__
    machine = ("autocast",)  # turned off by the run itself where the CPU has no native bfloat16, not typed
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in config.items() if default.get(k) != v
                    and k not in machine)


def section(train: Path, evaluation: Path, note: str = "") -> list[str]:
    """Markdown lines for one model (``note``: what was seen while it ran, said after its verdict)."""
    lens, cmp = load_result(train / "result"), load_result(evaluation / "result")
    name = lens.model.replace("/", "--")
    save_figure(comparison_figure(cmp), DOCS / "figures" / f"lens-compare-{name}.png")
    save_figure(training_figure(lens), DOCS / "figures" / f"lens-training-{name}.png")
    t, c = lens.training, cmp.config
    mean = cmp.summary()["mean_kl"]
    worse = cmp.worse_rows()
    rows = [f"| {label} | {float(cmp.kl[0, i]):.3f} | {float(cmp.kl[1, i]):.3f} | {float(cmp.top1[0, i]):.3f} | "
            f"{float(cmp.top1[1, i]):.3f} |" for i, label in enumerate(cmp.layer_labels)]
    verdict = ("The tuned lens has the lower held-out KL at every layer but the last (the model's output, where both "
               "readouts are exact)." if not worse else
               f"The tuned lens does **not** beat the logit lens at layer(s) {', '.join(worse)}.")
    short = (f" (the corpus ran out before the {t['config']['tokens']:,} asked)"
             if t["tokens"] < t["config"]["tokens"] else "")
    return [f"## {lens.model}", "",
            f"Trained with `lmscope --model {lens.model} lens train {_flags(t['config'])} --out {train}`: "
            f"{t['tokens']:,} tokens read by the model{short} in {t['steps']} steps, **{t['seconds'] / 60:.1f} "
            f"minutes** on "
            f"this 2-core CPU (each translator learns from {t['config']['position_fraction']:g} of a batch's "
            f"positions). Compared with `lmscope --model {lens.model} lens eval --tokens {c.tokens} --out "
            f"{evaluation}` on {cmp.positions:,} held-out positions of the {c.corpus} test split.", "",
            f"Mean KL to the final layer over the layers: logit lens {mean['logit lens']:.3f} nats, tuned lens "
            f"{mean['tuned lens']:.3f} nats. {verdict}" + (f" {note}" if note else ""), "",
            f"![logit vs tuned lens, {lens.model}](figures/lens-compare-{name}.png)", "",
            "| layer | KL logit lens | KL tuned lens | top-1 logit lens | top-1 tuned lens |", "|---|---|---|---|---|",
            *rows, "",
            f"![training of the tuned lens, {lens.model}](figures/lens-training-{name}.png)", ""]


def main(argv: list[str]) -> None:
    """Write the page (each model's section ends with its note from :data:`NOTES`)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", action="append", default=[], metavar="MODEL",
                        help="keep this model's section of the current page (its run folders are not here)")
    parser.add_argument("folders", nargs="*", help="(training folder, comparison folder) pairs")
    args = parser.parse_args(argv)
    folders = args.folders
    if len(folders) % 2:
        raise SystemExit("give (training folder, comparison folder) pairs")
    old = (DOCS / "lenses.md").read_text() if args.keep else ""
    kept = [line for model in args.keep for line in kept_section(old, model, "docs/lenses.md")]
    pairs = list(zip(folders[::2], folders[1::2]))
    lines = ["# Lenses: the logit lens and the tuned lens", "",
             "Every residual stream read as a next-token prediction. The logit lens (nostalgebraist 2020) applies the "
             "final norm and the unembedding to it as it is; the tuned lens (Belrose et al. 2023) first applies an "
             "affine translator trained for that layer to minimise KL(P_final || P_lens) at the same position, "
             "initialised to the identity. The paper's claim: the tuned lens' predictions are closer to the final "
             "distribution at every layer, and most so early, where the logit lens is brittle. Both readouts go "
             "through one seam (`lmscope.model.readout`), so the lens command, the stages analysis and the "
             "workbench read a layer the same way (`--readout auto|logit|tuned`; auto takes the model's tuned lens "
             "when the store has one, and every result says which it used).", "",
             "Generated by `python docs/make_lens_page.py " + " ".join(argv) + "`.", "",
             "## Training on a CPU", "",
             "The paper trains 250 SGD steps of 2^18 tokens on GPUs. Here every translator reads its positions "
             "through the whole unembedding (49,152 x 576 for SmolLM2, 262,144 x 640 for Gemma 3), forward and "
             "backward, so the cost is in the vocabulary: the KL's gradient is computed in one cache-sized pass "
             "(`KLFromLogits`, about 3x faster than autograd), the model runs in bfloat16 autocast where the CPU "
             "has native bfloat16 (float32 where it does not, as on an AVX2-only CPU, where bfloat16 matmuls are "
             "~20x slower), and each step trains every translator on the same random tenth of its positions. "
             "Measured on smollm2-135m while choosing these defaults (262,144 training tokens each, held-out KL "
             "averaged over the layers; the logit lens: 18.56 nats): 32 steps of 8,192 tokens, 6.37 nats; 128 "
             "steps of 2,048 tokens, 4.10 nats (465 s); the same with tuned-lens' Adam instead of SGD, 3.83 nats "
             "(560 s). Smaller, more numerous steps matter more than the optimiser on this model, but not on Gemma 3 "
             "(below): there SGD's held-out mean KL was twice Adam's, and worse than the logit lens at one layer. "
             "Adam is the default; the paper's SGD with Nesterov momentum is `--optimizer sgd`.", "",
             "Such steps are 128 times smaller than the paper's, and a translator whose stream is already close to "
             "the output can end further from it than the identity it started at. So after training, each "
             "translator is shrunk towards the identity on held-out text of the training split (the 8,192 tokens "
             "after those trained on, at the same tenth of the positions): h + a (W h + b) with the a of 0, 0.25, "
             "0.5, 0.75 or 1 that reads those positions best (`--select-tokens`, 0: off; a = 0 is the logit lens). "
             "The comparisons below are on the test split, which neither step reads.", "", *kept]
    for train, evaluation in pairs:
        model = load_result(Path(train) / "result").model
        lines += section(Path(train), Path(evaluation), NOTES.get(model, ""))
    (DOCS / "lenses.md").write_text("\n".join(lines))
    print(f"wrote {DOCS / 'lenses.md'}")


if __name__ == "__main__":
    main(sys.argv[1:])
