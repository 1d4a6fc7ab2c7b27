"""Results of neuron attribution, of the causal checks and of a neuron edit; each saves, reloads and summarises."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from lmscope.io import Result
from lmscope.methods.neurons.config import AblationConfig, NeuronConfig, NeuronEditConfig, OcclusionConfig

GRADIENT = "the target's logit (not its log-probability)"  # what gradient x activation differentiates


@dataclass
class NeuronResult(Result):
    """Every neuron's scores for each prompt's target token, and each prompt's top neurons.

    ``top[b]``: dicts with layer, neuron, contribution, gradxact, rank_contribution / rank_gradxact (1 = best over all
    scored neurons; None for a method not run), vocab (top tokens of W_U w_out) and vocab_bottom.
    ``top_acts[b, j, p]``: the MLP key of the j-th top neuron at token p of prompt b (NaN past the prompt's end).
    Gradient x activation differentiates the target's logit (not its log-probability).

    With an image (:func:`~lmscope.methods.neurons.vision.find_image_neurons`), two rankings, listed apart:
    ``top`` by the first method (forward contribution at the predicting position, with method "both") and
    ``top_image`` by gradient x activation summed over the image tokens (Schwettmann et al.'s g: only neurons with
    a path from a patch to the word score there). Patch maps are drawn for ``top_image`` (:meth:`image_map`).
    """

    gradient: ClassVar[str] = GRADIENT
    model: str
    prompts: list[str]
    targets: list[str]  # the scored target token of each prompt, decoded
    target_ids: list[int]
    tokens: list[list[str]]  # each prompt's tokens
    layers: list[int]
    contribution: torch.Tensor  # (batch, n_layers, d_mlp); empty when not computed
    gradxact: torch.Tensor  # (batch, n_layers, d_mlp); empty when not computed
    top: list[list[dict]]
    top_acts: torch.Tensor  # (batch, top_k, max_pos)
    target_prob: list[float]  # P(target) at the scored position
    agreement: list[float]  # Spearman rank correlation of the two scores over every neuron (NaN: one method)
    overlap: list[float]  # fraction of the top-k neurons both scores put in their top-k (NaN: one method)
    notes: list[str] = field(default_factory=list)
    config: NeuronConfig = field(default_factory=NeuronConfig)
    patch_acts: torch.Tensor = field(default_factory=lambda: torch.empty(0))  # (batch, top_k, image tokens)
    grid: list[int] = field(default_factory=list)  # [rows, cols] of the image patches, when there is an image
    top_image: list[list[dict]] = field(default_factory=list)  # per prompt: top neurons by g over the image tokens
    image_acts: torch.Tensor = field(default_factory=lambda: torch.empty(0))  # (batch, top_k, image tokens)
    prefixes: list[str] = field(default_factory=list)  # per prompt: the text fed with the image, image tokens left out

    def patch_map(self, b: int, j: int) -> torch.Tensor:
        """(rows, cols) activation over the image patches of prompt ``b``'s j-th neuron of ``top``.

        ``top`` ranks by forward contribution at the predicting position: the patch maps of the paper are those of
        :meth:`image_map`.
        """
        if not self.grid:
            raise KeyError("this result has no image")
        return self.patch_acts[b, j, : self.grid[0] * self.grid[1]].reshape(self.grid)

    def image_map(self, b: int, j: int) -> torch.Tensor:
        """(rows, cols) activation over the image patches of prompt ``b``'s j-th neuron of ``top_image``."""
        if not self.grid or self.image_acts.numel() == 0:
            raise KeyError("this result has no image-ranked neurons (an image and method gradxact or both)")
        return self.image_acts[b, j, : self.grid[0] * self.grid[1]].reshape(self.grid)

    def scores(self, method: str) -> torch.Tensor:
        """(batch, n_layers, d_mlp) scores of "contribution" or "gradxact"."""
        value = self.contribution if method == "contribution" else self.gradxact
        if value.numel() == 0:
            raise KeyError(f"this result has no {method} scores (method {self.config.method!r})")
        return value

    def summary(self) -> dict:
        """Per prompt: the target, its probability, the agreement of the scores and the top neurons."""
        rows = []
        for b, prompt in enumerate(self.prompts):
            rows.append({"prompt": prompt, "target": self.targets[b], "target_prob": self.target_prob[b],
                         "spearman": _or_none(self.agreement[b]), "top_k_overlap": _or_none(self.overlap[b]),
                         "top": _brief(self.top[b])})
            if self.top_image:
                rows[-1]["top_image"] = _brief(self.top_image[b])
        return {"model": self.model, "method": self.config.method, "layers": len(self.layers),
                "gradient": self.gradient, "ranking": self.rankings(), "prompts": rows, "notes": self.notes}

    def rankings(self) -> dict[str, str]:
        """What ``top`` (and, with an image, ``top_image``) are ranked by, in words."""
        first = "contribution" if self.config.method != "gradxact" else "gradxact"
        where = ("the image tokens" if self.grid else "the predicting position" if self.config.positions == "last"
                 else "every prompt token")
        words = {"contribution": "forward contribution at the predicting position",
                 "gradxact": f"gradient x activation summed over {where}"}
        out = {"top": words[first]}
        if self.top_image:
            out["top_image"] = words["gradxact"] + " (what the patch maps draw)"
        return out

    def save(self, path: str | Path) -> Path:
        """Save as every result; the agreement of a one-method run (NaN: not computed) is written as null."""
        return Result.save(dataclasses.replace(self, agreement=[_or_none(v) for v in self.agreement],
                                               overlap=[_or_none(v) for v in self.overlap]), path)

    @classmethod
    def load(cls, path: str | Path) -> NeuronResult:
        """Load a saved result; a null agreement is NaN again (one method)."""
        result = super().load(path)
        result.agreement = [math.nan if v is None else v for v in result.agreement]
        result.overlap = [math.nan if v is None else v for v in result.overlap]
        return result


def _brief(tops: list[dict]) -> list[dict]:
    """Top neurons as the summary lists them (without the bottom vocabulary)."""
    return [{k: v for k, v in n.items() if k != "vocab_bottom"} for n in tops]


def _or_none(value: float | None) -> float | None:
    """``value``, or None where it is not a finite number (JSON has no NaN: a quantity not computed is null)."""
    return value if value is not None and math.isfinite(value) else None


@dataclass
class AblationResult(Result):
    """The causal check of one neuron set per prompt against random sets of the same size."""

    model: str
    prompts: list[str]
    targets: list[str]
    neurons: list[list[list[int]]]  # per prompt: [layer, neuron] pairs ablated
    prob_before: list[float]  # P(target) with nothing ablated
    prob_after: list[float]  # P(target) with the neurons ablated
    random_after: torch.Tensor  # (batch, random_sets) P(target) with random sets ablated
    top1_before: list[bool]  # target is the argmax before
    top1_after: list[bool]
    generated_before: list[bool]  # target among the greedy continuation's tokens
    generated_after: list[bool]
    random_generated: torch.Tensor  # (batch, random_sets) bool, as float
    config: AblationConfig = field(default_factory=AblationConfig)

    def summary(self) -> dict:
        """Means over prompts: probability drop of the found set against the random sets, and generation."""
        before = torch.tensor(self.prob_before)
        after = torch.tensor(self.prob_after)
        rnd = self.random_after
        n = len(self.prompts)
        drops = before[:, None] - rnd  # (batch, random_sets)
        return {"model": self.model, "mode": self.config.mode, "prompts": n,
                "neurons_per_prompt": [len(x) for x in self.neurons],
                "prob_before": float(before.mean()), "prob_after": float(after.mean()),
                "prob_drop": float((before - after).mean()),
                "random_prob_drop": float(drops.mean(1).mean()) if rnd.numel() else None,
                "random_prob_drop_std": float(drops.std()) if rnd.numel() > 1 else None,  # one value: no spread
                "generated_before": sum(self.generated_before) / n, "generated_after": sum(self.generated_after) / n,
                "random_generated": float(self.random_generated.mean()) if self.random_generated.numel() else None,
                "top1_before": sum(self.top1_before) / n, "top1_after": sum(self.top1_after) / n}


@dataclass
class OcclusionResult(Result):
    """A patch map checked by occlusion: P(word) with the map's brightest patches covered, against random ones.

    Maps must lower P(word) more than as many random patches do; P(word) on a blank image is the control of whether
    the word depends on the image at all.
    """

    model: str
    word: str  # the target token, decoded
    target_id: int
    neurons: list[list[int]]  # [layer, neuron] of each map checked
    patches: int  # patches covered per map (and per random set)
    covered: list[list[int]]  # per map: the image tokens covered (its brightest)
    prob: float  # P(word), nothing covered
    prob_top: list[float]  # per map: P(word) with its brightest patches covered
    prob_random: list[float]  # per random set: P(word) with that many random patches covered
    prob_blank: float  # P(word) with every pixel covered (a blank image)
    config: OcclusionConfig = field(default_factory=OcclusionConfig)

    def drops(self) -> list[float]:
        """Per map: P(word) drop when its brightest patches are covered."""
        return [self.prob - p for p in self.prob_top]

    def random_drop(self) -> float:
        """Mean P(word) drop over the random sets."""
        return self.prob - sum(self.prob_random) / len(self.prob_random)

    def summary(self) -> dict:
        """Per map: the drop, and whether it beats the random sets' mean drop; the blank-image control."""
        rnd = torch.tensor(self.prob_random, dtype=torch.float64)
        return {"model": self.model, "word": self.word, "patches": self.patches, "fill": self.config.fill,
                "prob": self.prob, "prob_blank": self.prob_blank,
                "random_drop": self.random_drop(),
                "random_drop_std": float(rnd.std()) if rnd.numel() > 1 else None,
                "maps": [{"layer": n[0], "neuron": n[1], "drop": d, "beats_random": d > self.random_drop()}
                         for n, d in zip(self.neurons, self.drops())]}


@dataclass
class SensitivityResult(Result):
    """Whether neurons found on some inputs fire on other inputs of the same concept and stay quiet on others.

    A neuron fires on an input when its activation at the scored site (``site``: ``last``, the last token; ``image``,
    its peak over the image tokens) is in the top ``quantile`` of its layer's neurons there. ``same`` / ``other``:
    (n_inputs, n_neurons) activations on same- and other-concept inputs.
    """

    model: str
    neurons: list[list[int]]  # [layer, neuron]
    same_prompts: list[str]
    other_prompts: list[str]
    same: torch.Tensor  # (n_same, n_neurons)
    other: torch.Tensor  # (n_other, n_neurons)
    same_fires: torch.Tensor  # (n_same, n_neurons) 0/1
    other_fires: torch.Tensor  # (n_other, n_neurons) 0/1
    quantile: float = 0.99
    site: str = "last"

    @property
    def sensitivity(self) -> float:
        """Fraction of (neuron, same-concept input) pairs on which the neuron fires (NaN: no same-concept input)."""
        return float(self.same_fires.float().mean()) if self.same_fires.numel() else float("nan")

    @property
    def specificity(self) -> float:
        """Fraction of (neuron, other-concept input) pairs on which it does not (NaN: no other-concept input)."""
        return float(1 - self.other_fires.float().mean()) if self.other_fires.numel() else float("nan")

    def summary(self) -> dict:
        """Sensitivity, specificity and the mean activations (null where there were no inputs of that kind)."""
        mean = (lambda t: float(t.float().mean()) if t.numel() else None)  # noqa: E731
        return {"model": self.model, "neurons": len(self.neurons), "same_inputs": len(self.same_prompts),
                "other_inputs": len(self.other_prompts), "sensitivity": _or_none(self.sensitivity),
                "specificity": _or_none(self.specificity), "mean_activation_same": mean(self.same),
                "mean_activation_other": mean(self.other), "quantile": self.quantile,
                "site": self.site}


@dataclass
class NeuronEdit(Result):
    """One neuron edit (Pan et al.): W_out[:, neuron] of ``layer`` += delta, moving its contribution v0 -> v1."""

    model: str
    layer: int
    neuron: int
    v0: str
    v1: str
    v0_id: int
    v1_id: int
    activation: float  # o_i on the prompt it was computed from
    delta: torch.Tensor  # (d_model,)
    weights: str  # digest of W_out[layer] the edit was computed on
    contribution_before: list[float]  # [w.u_v0, w.u_v1] per unit of activation
    contribution_after: list[float]
    losses: list[float]
    prompt: str = ""
    config: NeuronEditConfig = field(default_factory=NeuronEditConfig)

    def summary(self) -> dict:
        """Where the neuron's output pointed before and after, and the size of the change."""
        return {"model": self.model, "layer": self.layer, "neuron": self.neuron, "v0": self.v0, "v1": self.v1,
                "activation": self.activation, "delta_norm": float(self.delta.norm()),
                "contribution_before": self.contribution_before, "contribution_after": self.contribution_after,
                "steps": len(self.losses), "prompt": self.prompt}
