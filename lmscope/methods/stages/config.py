"""Options of the stages analysis and of a single lesion, with the names the stages modules share."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmscope import config as check
from lmscope.data.activations import TextConfig, text_field
from lmscope.model.readout import READOUTS, readout_field

MODES = ("delete", "swap")
METRICS = ("kl", "rel_acc", "d_entropy")


@dataclass
class StagesConfig(TextConfig):
    """Options of the stages analysis (the text: :class:`TextConfig`, every position counts)."""

    tokens: int = text_field(8192, "held-out tokens (test split) for lesions, lens, locality; whole rows of seq_len")
    batch_size: int = text_field(8, "rows per forward pass")
    locality_window: int = field(default=5, metadata={"help": "previous tokens counted as local attention"})
    kurtosis_threshold: float = field(default=10.0, metadata={
        "help": "vocabulary kurtosis above which a neuron predicts (skew > 0) or suppresses (skew < 0)"})
    skew_threshold: float = field(default=0.0, metadata={"help": "|skew| a prediction / suppression neuron exceeds"})
    top_neurons: int = field(default=10, metadata={"help": "neurons listed per class, with their top tokens"})
    top_tokens: int = field(default=8, metadata={"help": "tokens shown per listed neuron"})
    readout: str = readout_field("auto")

    def __post_init__(self) -> None:
        super().__post_init__()
        check.one_of(self, "readout", READOUTS)
        check.at_least(self, 1, "locality_window", "top_tokens")
        check.at_least(self, 0, "top_neurons", "skew_threshold")
        check.finite(self, "kurtosis_threshold")
        check.at_least(self, self.seq_len, "tokens")


@dataclass
class LesionConfig:
    """One lesion of one prompt: which block, how, and how many next tokens to show."""

    layer: int = field(default=0, metadata={"help": "block to delete (or to swap with the next one)", "required": True,
                                            "min": -4096, "max": 4096})
    mode: str = field(default="delete", metadata={"help": "delete or swap"})
    top_k: int = field(default=5, metadata={"help": "next tokens shown", "min": 1, "max": 100})

    def __post_init__(self) -> None:
        check.one_of(self, "mode", MODES)
        check.at_least(self, 1, "top_k")
        check.bounds(self)
