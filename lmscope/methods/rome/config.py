"""The request and the options of ROME (the paper's defaults), at the bottom of the ROME package."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmscope import config as check
from lmscope.errors import ConfigError, InputError


@dataclass(frozen=True)
class EditRequest:
    """Rewrite ``prompt.replace("{}", subject)`` to continue with ``target`` (e.g. " Rome")."""

    prompt: str  # template with "{}" for the subject, e.g. "{} is located in the city of"
    subject: str
    target: str

    def __post_init__(self) -> None:
        if self.prompt.count("{}") != 1:
            hint = (f"; did you mean {self.prompt.replace(self.subject, '{}', 1)!r}?"
                    if self.subject and self.prompt.count("{}") == 0 and self.subject in self.prompt else "")
            raise InputError(f"prompt template {self.prompt!r} must contain '{{}}' exactly once (for the subject)"
                             + hint)
        if not self.subject.strip():
            raise InputError("empty subject")
        if not self.target.strip():
            raise InputError("empty target: give the new answer's text, e.g. ' Rome'")
        if not self.target.startswith(" ") and not self.prompt.endswith(" "):
            object.__setattr__(self, "target", " " + self.target)  # a continuation, as ROME does

    @property
    def text(self) -> str:
        """The rendered prompt."""
        return self.prompt.replace("{}", self.subject)


@dataclass
class RomeConfig:
    """Options of ROME; the defaults are the paper's (GPT-2 XL hyper-parameters)."""

    layer: int | str = field(default="auto", metadata={
        "help": "edit layer, or 'auto': the MLP AIE peak at the last subject token (shipped, or from trace-dataset)",
        "min": -4096, "max": 4096})  # negative layers count from the end
    v_steps: int = field(default=20, metadata={"help": "optimisation steps for v*", "min": 1, "max": 1000})
    v_lr: float = field(default=0.5, metadata={"help": "Adam learning rate for v*", "min": 0, "max": 100})
    v_weight_decay: float = field(default=0.5, metadata={"help": "weight decay on |delta| / |v0|^2", "min": 0,
                                                         "max": 1000})
    kl_factor: float = field(default=0.0625, metadata={"help": "weight of the KL essence term on '{} is a'",
                                                       "min": 0, "max": 1000})
    clamp_norm_factor: float = field(default=4.0, metadata={"help": "|delta| is clamped to this x |v0|", "min": 0,
                                                            "max": 1000})
    early_stop_loss: float = field(default=0.05, metadata={"help": "stop optimising v* below this loss", "min": 0,
                                                           "max": 100})
    kl_prompt: str = field(default="{} is a", metadata={"help": "prompt of the essence (KL) term",
                                                        "max_tokens": 64})
    context_lengths: tuple[int, ...] = field(default=(5, 10), metadata={
        "help": "token lengths of the sampled context prefixes", "min": 1, "max": 64, "max_items": 8})
    contexts_per_length: int = field(default=10, metadata={"help": "sampled prefixes per length (0: none)",
                                                           "min": 0, "max": 100})
    context_seed: int = field(default=0, metadata={"help": "seed of the prefix sampling", "min": 0,
                                                   "max": 2**32 - 1})
    mom2_adjustment: bool = field(default=True, metadata={"help": "use C^-1 k* (False: k* itself)"})
    stats_corpus: str = field(default="wiki", metadata={"help": "corpus of the second-moment statistics"})
    stats_samples: int = field(default=100_000, metadata={
        "help": "texts for the statistics (paper: 100,000; capped at the corpus size)", "min": 1,
        "max": 10_000_000})

    def __post_init__(self) -> None:
        self.context_lengths = tuple(int(n) for n in self.context_lengths)
        if isinstance(self.layer, str) and self.layer != "auto":
            try:
                self.layer = int(self.layer)
            except ValueError as err:
                raise ConfigError(f"layer must be an int or 'auto', got {self.layer!r}") from err
        check.at_least(self, 1, "v_steps", "stats_samples")
        check.at_least(self, 0, "contexts_per_length", "v_weight_decay", "kl_factor", "early_stop_loss")
        check.positive(self, "v_lr", "clamp_norm_factor")
        if any(n < 1 for n in self.context_lengths):
            raise ConfigError(f"context-lengths must be >= 1 token each, got {list(self.context_lengths)}")
        if "{}" not in self.kl_prompt:
            raise ConfigError(f"kl_prompt {self.kl_prompt!r} must contain '{{}}'")
        if len(self.kl_prompt) > 4 * 64:  # a bound in characters before any tokenizer is at hand (64 tokens later)
            raise ConfigError(f"kl_prompt is {len(self.kl_prompt)} characters long; at most 64 tokens are allowed")
        check.bounds(self)
