"""Run the text-neuron analysis of docs/neurons.md on the bundled smollm2-135m and write the page.

    python docs/make_neurons_page.py [--facts 60] [--random-sets 20] [--out out/neurons-doc]

Known facts (../shared/data/known_1000.json) that the model completes with the first token of their answer are
scored by forward contribution and gradient x activation (top 10 neurons each); the top neurons are zero-ablated
against random sets of the same size; the " Paris" neurons are checked for sensitivity (other facts answered
" Paris") and specificity (facts with other answers); one neuron is edited from " Paris" to " Rome".
Results are saved under --out (result folders the CLI can read); the page and its figure go to docs/.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
from pathlib import Path

import torch

import lmscope
from lmscope.data.facts import load_known_facts
from lmscope.methods.neurons import AblationConfig, NeuronConfig, ablate_neurons, find_neurons, neuron_edit, sensitivity
from lmscope.model.generate import greedy
from lmscope.model.tokens import target_ids
from lmscope.viz.neurons import neurons_figure
from lmscope.viz.report import save_figure

DOCS = Path(__file__).resolve().parent
DATA = DOCS.parent.parent / "shared" / "data" / "known_1000.json"
EIFFEL = "The Eiffel Tower is located in the city of"


def known(lm, n: int) -> list:
    """The first ``n`` facts whose answer's first token is the model's greedy next token."""
    kept = []
    for fact in load_known_facts(DATA):
        answer = target_ids(lm, " " + fact.attribute)[0]
        with torch.no_grad():
            if int(lm(fact.prompt)[0, -1].argmax()) == answer:
                kept.append(fact)
        if len(kept) == n:
            break
    return kept


def _fmt(x: float, d: int = 3) -> str:
    return f"{x:.{d}f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--facts", type=int, default=60)
    parser.add_argument("--random-sets", type=int, default=20)
    parser.add_argument("--out", default="out/neurons-doc")
    args = parser.parse_args()
    torch.manual_seed(0)
    out = Path(args.out)
    lm = lmscope.load("smollm2-135m")
    facts = known(lm, args.facts)
    prompts = [f.prompt for f in facts]
    found = find_neurons(lm, prompts, [" " + f.attribute for f in facts], NeuronConfig(top_k=10))
    found.save(out / "facts")
    ablation = ablate_neurons(lm, found, AblationConfig(random_sets=args.random_sets, new_tokens=5))
    ablation.save(out / "ablation")
    eiffel = find_neurons(lm, EIFFEL, " Paris", NeuronConfig(top_k=10))
    eiffel.save(out / "eiffel")
    save_figure(neurons_figure(eiffel), DOCS / "figures" / "neurons-eiffel.png")
    paris = [f.prompt for f in load_known_facts(DATA) if f.attribute == "Paris" and f.prompt != EIFFEL]
    others = [f.prompt for f in load_known_facts(DATA) if f.attribute not in ("Paris", "France", "French")][:40]
    top_paris = [[t["layer"], t["neuron"]] for t in eiffel.top[0]]
    sens = sensitivity(lm, top_paris, paris, others)
    sens.save(out / "sensitivity")
    edit = edit_section(lm, eiffel)
    write_page(lm, facts, found, ablation, eiffel, sens, edit, args)


def edit_section(lm, eiffel) -> dict:
    """Edit the top " Paris" neuron toward " Rome"; P and generations on the prompt and on neighbours."""
    top = eiffel.top[0][0]
    prompts = [("edit", EIFFEL), ("same answer", "The Louvre is located in the city of"),
               ("neighbour", "The Colosseum is located in the city of"),
               ("neighbour", "The capital of Germany is")]
    paris, rome = target_ids(lm, " Paris")[0], target_ids(lm, " Rome")[0]

    def probe(p):
        with torch.no_grad():
            probs = lm(p)[0, -1].float().softmax(-1)
        return float(probs[paris]), float(probs[rome]), greedy(lm, p, 6)
    before = [probe(p) for _, p in prompts]
    with neuron_edit(lm, top["layer"], top["neuron"], " Paris", " Rome", EIFFEL) as handle:
        after = [probe(p) for _, p in prompts]
    handle.edit.save(Path("out/neurons-doc/edit"))
    return {"edit": handle.edit, "rows": [(k, p, b, a) for (k, p), b, a in zip(prompts, before, after)]}


def write_page(lm, facts, found, ablation, eiffel, sens, edit, args) -> None:
    n = len(facts)
    spear = [x for x in found.agreement]
    overlap = [x for x in found.overlap]
    counts = collections.Counter((t["layer"], t["neuron"]) for tops in found.top for t in tops)
    layers = collections.Counter(t["layer"] for tops in found.top for t in tops)
    a = ablation.summary()
    e = edit["edit"]
    lines = [
        "# Neurons that write a token (text)", "",
        "Forward contribution (Pan et al. 2024) and gradient x activation (Schwettmann et al. 2023) of every MLP "
        "neuron of smollm2-135m (30 layers x 1,536 neurons = 46,080), read at the MLP key (the input of W_out: "
        "SiLU(gate) x up for this gated MLP), the causal check against random neurons, sensitivity / specificity, "
        "and one neuron edit. Generated by `python docs/make_neurons_page.py --facts "
        f"{args.facts} --random-sets {args.random_sets}` (CPU, float32); results under `out/neurons-doc/`. The "
        "same methods on the bundled vision-language model (image patches, captions): "
        "[neurons-vlm.md](neurons-vlm.md).",
        "",
        "## The Eiffel Tower", "",
        f"`lmscope neurons \"{EIFFEL}\" --target \" Paris\" --ablate`. P(\" Paris\") = "
        f"{eiffel.target_prob[0]:.3f}; Spearman correlation of the two scores over all 46,080 neurons "
        f"{eiffel.agreement[0]:.3f}, top-10 overlap {eiffel.overlap[0]:.1f}.", "",
        "| rank | neuron | contribution | grad x act (rank) | W_U w_out: top tokens |", "|---|---|---|---|---|"]
    for i, t in enumerate(eiffel.top[0], 1):
        lines.append(f"| {i} | L{t['layer']}.{t['neuron']} | {t['contribution']:.3f} | {t['gradxact']:.3f} "
                     f"({t['rank_gradxact']}) | {' '.join(repr(v) for v in t['vocab'][:6])} |")
    lines += ["", "![top neurons for Paris](figures/neurons-eiffel.png)", "",
              f"## {n} known facts", "",
              f"Facts of known_1000 that the model completes with the first token of their answer (the first {n} "
              "in file order). Per fact: the top 10 neurons by contribution.", "",
              f"- Agreement of the two scores: Spearman over all neurons, mean {_fmt(statistics.mean(spear))} "
              f"(min {_fmt(min(spear))}, max {_fmt(max(spear))}); top-10 overlap mean "
              f"{_fmt(statistics.mean(overlap), 2)}.",
              "- Layers of the top neurons (count over all facts): "
              + ", ".join(f"L{k}: {v}" for k, v in sorted(layers.items(), key=lambda kv: -kv[1])[:8]) + ".",
              "- Neurons in the top 10 of most facts: "
              + ", ".join(f"L{k[0]}.{k[1]} ({v})" for k, v in counts.most_common(6)) + ".", "",
              f"### Zero-ablating the top 10 vs {ablation.config.random_sets} random sets of 10", "",
              "| | top-10 neurons | random 10 |", "|---|---|---|",
              f"| mean P(answer) drop (before: {a['prob_before']:.3f}) | {a['prob_drop']:.4f} | "
              f"{a['random_prob_drop']:.4f} (std {a['random_prob_drop_std']:.4f}) |",
              f"| answer still in the 5-token greedy continuation (before: {a['generated_before']:.2f}) | "
              f"{a['generated_after']:.2f} | {a['random_generated']:.2f} |",
              f"| answer still top-1 (before: {a['top1_before']:.2f}) | {a['top1_after']:.2f} | |", "",
              "## Sensitivity and specificity of the Eiffel Tower's \" Paris\" neurons", "",
              f"A neuron fires on a prompt when its activation at the last token is in the top 1% of its layer. "
              f"On {len(sens.same_prompts)} other facts answered \" Paris\" (sensitivity) the 10 neurons fire on "
              f"{sens.sensitivity:.2f} of (neuron, prompt) pairs; on {len(sens.other_prompts)} facts with other "
              f"answers they stay quiet on {sens.specificity:.2f} (specificity). Mean activation "
              f"{float(sens.same.mean()):.3f} vs {float(sens.other.mean()):.3f}.", "",
              "## One neuron edit", "",
              f"`lmscope neuron-edit --layer {e.layer} --neuron {e.neuron} --v0 \" Paris\" --v1 \" Rome\" --prompt "
              f"\"{EIFFEL}\"`: the neuron's contribution (o w.u) to \" Paris\" / \" Rome\" goes from "
              f"{e.contribution_before[0]:.3f} / {e.contribution_before[1]:.3f} to {e.contribution_after[0]:.3f} / "
              f"{e.contribution_after[1]:.3f} (|delta w| {float(e.delta.norm()):.3f}, {len(e.losses)} Adam steps). "
              "Undo restores W_out bit for bit (tested).", "",
              "| prompt | kind | P(Paris) before -> after | P(Rome) before -> after | greedy before -> after |",
              "|---|---|---|---|---|"]
    for kind, p, b, a_ in edit["rows"]:
        lines.append(f"| {p} | {kind} | {b[0]:.3f} -> {a_[0]:.3f} | {b[1]:.4f} -> {a_[1]:.4f} | {b[2]!r} -> "
                     f"{a_[2]!r} |")
    lines += ["", "One neuron carries a small part of the answer: the edit moves that neuron's direct contribution "
              "as asked, and the probabilities by as much as that one contribution weighs in the logit.", ""]
    (DOCS / "neurons.md").write_text("\n".join(lines))
    print(json.dumps({"facts": n, "spearman": statistics.mean(spear), "ablation": a}, indent=1))


if __name__ == "__main__":
    main()
