"""Options of neuron attribution, of the causal checks and of neuron editing, with the papers' defaults.

Scores (Pan et al. 2024; Schwettmann et al. 2023):

- forward contribution: s_i^l = O_i^l (W_U W_out^l)[t, i], O^l the MLP key (the input of W_out) at the scored
  position and t the target token; the paper's direct path, with no norm between W_out and W_U applied;
- gradient x activation: Z_i^l(p) dy_t / dZ_i^l(p) summed over the scored positions p, with y_t the target's
  logit (the logit, not its log-probability: the other tokens' logits play no part) and Z the MLP key (the true
  input of W_out; ``grad_site="mlp_pre"`` scores Schwettmann's pre-activation, the output of W_in / the gate
  projection).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmscope import config as check
from lmscope.errors import ConfigError

METHODS = ("contribution", "gradxact", "both")
ABLATIONS = ("zero", "mean", "noise")


@dataclass
class NeuronConfig:
    """Which neurons are scored, how, and how many are reported."""

    method: str = field(default="both", metadata={"help": "contribution (one forward pass), gradxact (one backward "
                                                          "pass) or both"})
    top_k: int = field(default=10, metadata={"help": "neurons reported (across all layers), ranked by the first "
                                                     "method", "min": 1, "max": 1000})
    layers: tuple[int, ...] = field(default=(), metadata={"help": "layers scored (empty: all)", "min": 0,
                                                          "max": 4096, "max_items": 4096})
    grad_site: str = field(default="mlp_key", metadata={
        "help": "activation of gradient x activation: mlp_key (input of W_out) or mlp_pre (Schwettmann's "
                "pre-activation)"})
    positions: str = field(default="last", metadata={
        "help": "positions gradient x activation sums over: last (the predicting position) or all (every prompt "
                "token)"})
    vocab_top: int = field(default=10, metadata={"help": "top tokens of W_U w_out shown per neuron", "min": 1,
                                                 "max": 100})

    def __post_init__(self) -> None:
        self.layers = tuple(map(int, self.layers))
        check.one_of(self, "method", METHODS)
        check.one_of(self, "grad_site", ("mlp_key", "mlp_pre"))
        check.one_of(self, "positions", ("last", "all"))
        check.at_least(self, 1, "top_k", "vocab_top")
        check.bounds(self)


@dataclass
class AblationConfig:
    """The causal check: ablate the top neurons, and as many random ones (the papers' control)."""

    mode: str = field(default="zero", metadata={"help": "zero, mean (over --mean-tokens of the corpus) or noise"})
    noise_scale: float = field(default=1.0, metadata={
        "help": "noise: Gaussian noise of this many standard deviations of the neuron's activation is added",
        "min": 0, "max": 100})
    random_sets: int = field(default=20, metadata={"help": "random neuron sets of the same size (control)", "min": 1,
                                                   "max": 1000})
    new_tokens: int = field(default=8, metadata={"help": "tokens generated to check whether the target still is",
                                                 "min": 0, "max": 256})
    mean_tokens: int = field(default=16_384, metadata={"help": "corpus tokens of the mean / std activation", "min": 1,
                                                       "max": 10_000_000})
    corpus: str = field(default="wiki", metadata={"help": "corpus of the mean / std activation"})
    control_seed: int = field(default=0, metadata={"help": "seed of the random sets and the noise", "min": 0,
                                                   "max": 2**32 - 1})

    def __post_init__(self) -> None:
        check.one_of(self, "mode", ABLATIONS)
        check.at_least(self, 0, "noise_scale", "new_tokens")
        check.at_least(self, 1, "mean_tokens")
        if isinstance(self.random_sets, int) and not isinstance(self.random_sets, bool) and self.random_sets < 1:
            raise ConfigError(f"random-sets must be at least one, got {self.random_sets}: the random sets of the "
                              "same size are the control the top neurons' ablation is compared with")
        check.bounds(self)


@dataclass
class CaptionConfig:
    """``neurons --image``: how the image is captioned before the neurons behind each content word are scored."""

    caption_tokens: int = field(default=8, metadata={"help": "caption length at most, in tokens (each content word "
                                                             "of the caption is one scored row)", "min": 1,
                                                     "max": 64})

    def __post_init__(self) -> None:
        check.bounds(self)
        check.at_least(self, 1, "caption_tokens")  # a non-number (bounds skips those)


FILLS = ("mean", "zero")


@dataclass
class OcclusionConfig:
    """The occlusion check of patch maps: cover a map's brightest patches, and as many random ones (the control).

    Covering a patch replaces the pixels of its box in ``pixel_values`` (the model's input image) with ``fill``:
    "mean", the image's own mean colour, or "zero", 0 in the processor's normalised space (its mean colour). The
    blank-image control fills every pixel so.
    """

    maps: int = field(default=4, metadata={"help": "patch maps checked: the first ones of top_image", "min": 1,
                                           "max": 1000})
    patches: int = field(default=-1, metadata={"help": "patches covered per map (-1: the top 5%, at least one)",
                                                "min": -1, "max": 100_000})
    draws: int = field(default=10, metadata={"help": "random sets of as many patches (control)", "min": 1,
                                             "max": 1000})
    fill: str = field(default="mean", metadata={"help": "what covers a patch: mean (the image's mean colour) or "
                                                        "zero (the processor's normalisation mean)"})
    seed: int = field(default=0, metadata={"help": "seed of the random patches", "min": 0, "max": 2**32 - 1})

    def __post_init__(self) -> None:
        check.one_of(self, "fill", FILLS)
        check.at_least(self, 1, "maps", "draws")
        check.at_least(self, -1, "patches")
        check.at_least(self, 0, "seed")
        check.bounds(self)


@dataclass
class NeuronEditConfig:
    """Pan et al.'s neuron edit: move a neuron's contribution from token v0 to v1 by changing its output weights.

    loss(w') = o (w'.u_v0 - w'.u_v1) + beta |o| |w' - w|_2, minimised by Adam on w' (the neuron's column of W_out)
    until w'.u_v1 exceeds w'.u_v0 by ``margin`` (in logits per unit of activation) or ``steps`` are spent.
    """

    beta: float = field(default=0.1, metadata={"help": "weight of |delta w|_2 (times the activation |o|)",
                                               "min": 0, "max": 1e6})
    lr: float = field(default=0.01, metadata={"help": "Adam learning rate on w' (at most 10)"})
    steps: int = field(default=200, metadata={"help": "optimisation steps at most", "min": 1, "max": 100_000})
    margin: float = field(default=0.0, metadata={"help": "stop once w'.u_v1 - w'.u_v0 exceeds this", "min": 0,
                                                 "max": 1e6})

    def __post_init__(self) -> None:
        check.at_least(self, 0, "beta", "margin")
        check.positive(self, "lr")
        check.at_least(self, 1, "steps")
        if self.lr > 10:
            raise ConfigError(f"lr must be at most 10, got {self.lr}")
        check.bounds(self)
