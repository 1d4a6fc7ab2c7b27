"""Options of the lenses: reading one prompt, training a tuned lens, comparing readouts on held-out text.

The tuned lens' defaults are the paper's (Belrose et al. 2023, and AlignmentResearch/tuned-lens' train loop): one
affine translator per residual stream but the last, initialised to the identity; the loss is KL(P_final || P_lens)
at the same position; weight decay 1e-3, the gradient clipped to norm 1 and the rate decayed linearly to 0. The
paper's 250 steps of 2^18 tokens are a GPU budget; the CPU defaults here are smaller steps (2,048 tokens: on
smollm2-135m, 128 steps of 2,048 tokens reached a held-out KL of 4.10 nats where 32 steps of 8,192 reached 6.37),
and the translators learn from a random tenth of a batch's positions (``position_fraction``), since every
translator reads every position through the whole (vocab x d_model) unembedding. At such steps tuned-lens' Adam
(AMSGrad, 1e-3, a warm-up of a fifth of the steps) is the default: on 262,144 tokens it reached a held-out mean KL
of 3.83 nats on smollm2-135m (SGD 4.10) and 6.53 on gemma3-270m (SGD 13.41, worse than the logit lens at the last
block's input). The paper's SGD (Nesterov momentum 0.9, learning rate 1.0 x (1 - momentum), no warm-up) is
``optimizer="sgd"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmscope import config as check
from lmscope.data.activations import CorpusConfig, text_field
from lmscope.errors import ConfigError
from lmscope.model.readout import READOUTS, readout_field

OPTIMIZERS = ("sgd", "adam")


@dataclass
class LensConfig:
    """Options of the lens of one prompt."""

    top_k: int = field(default=10, metadata={"help": "tokens kept per (layer, position)", "min": 1, "max": 100})
    chunk: int = field(default=256, metadata={
        "help": "positions unembedded at a time (memory only: a long prompt never holds all layers' logits)",
        "min": 1, "max": 8192})
    readout: str = readout_field("logit")  # a prompt's lens is the logit lens unless asked (stages: auto)

    def __post_init__(self) -> None:
        check.at_least(self, 1, "top_k", "chunk")
        check.one_of(self, "readout", READOUTS)
        check.bounds(self)


@dataclass
class TuneConfig(CorpusConfig):
    """Training of a tuned lens (the text: :class:`CorpusConfig`; sinks and first positions left out)."""

    split: str = text_field("train", "corpus split: train, test (held out) or all")
    tokens: int = text_field(917_504, "tokens read by the model (whole rows; the wiki train split holds about "
                                      "954k, a run stops early, said, when its corpus runs out)")
    seq_len: int = text_field(256, "tokens per row")
    batch_size: int = text_field(8, "rows per forward pass")
    tokens_per_step: int = field(default=2048, metadata={
        "help": "tokens per optimiser step, in whole forward passes (the paper: 2^18 on GPUs; on this CPU more, "
                "smaller steps learn more from the same tokens)"})
    position_fraction: float = field(default=0.1, metadata={
        "help": "part of a batch's positions each translator learns from (a random subset per translator; 1: "
                "every position, as the paper; lower is faster on a CPU)"})
    optimizer: str = field(default="adam", metadata={
        "help": "adam (tuned-lens' AMSGrad, betas (momentum, 0.999): better than SGD at this CPU's small steps on "
                "both bundled models) or sgd (Nesterov, the paper's, for steps of 2^18 tokens)",
        "choices": OPTIMIZERS})
    lr_scale: float = field(default=1.0, metadata={
        "help": "tuned-lens' default learning rate times this: SGD 1.0 x (1 - momentum), Adam 1e-3"})
    momentum: float = field(default=0.9, metadata={"help": "SGD Nesterov momentum, or Adam's beta1"})
    warmup_steps: int = field(default=-1, metadata={
        "help": "linear warm-up steps (-1: tuned-lens' default, 0 for SGD and min(1000, steps / 5) for Adam)"})
    weight_decay: float = field(default=1e-3, metadata={"help": "weight decay (towards the identity map)"})
    clip: float = field(default=1.0, metadata={"help": "gradient norm clip (0: none)"})
    bias: bool = field(default=True, metadata={"help": "translators have a bias"})
    autocast: bool = field(default=True, metadata={
        "help": "run the model and the unembedding in bfloat16 while training (the translators and the loss stay "
                "float32); left off, with a warning, where bfloat16 is slower than float32 (a CPU without native "
                "bfloat16)"})
    checkpoint_every: int = field(default=20, metadata={"help": "steps between checkpoints (a killed run resumes)"})
    select_tokens: int = field(default=8192, metadata={
        "help": "after training, tokens of the training split not trained on (read next) on which each translator "
                "is shrunk towards the identity: h + a (W h + b), a in 0, 0.25, .., 1, whichever has the lowest KL "
                "(a = 0 keeps the identity where training did not help); 0 tokens: no selection", "min": 0,
        "max": 10_000_000})

    def __post_init__(self) -> None:
        super().__post_init__()
        check.at_least(self, 1, "tokens_per_step", "checkpoint_every")
        check.bounds(self)
        check.positive(self, "lr_scale", "position_fraction")
        check.one_of(self, "optimizer", OPTIMIZERS)
        check.at_least(self, -1, "warmup_steps")
        check.at_least(self, 0, "momentum", "weight_decay", "clip")
        check.finite(self, "lr_scale", "momentum", "weight_decay", "clip", "position_fraction")
        if self.momentum >= 1:
            raise ConfigError(f"momentum must be below 1, got {self.momentum}")
        if self.position_fraction > 1:
            raise ConfigError(f"position-fraction is a part of the positions (0, 1], got "
                                    f"{self.position_fraction}")
        check.at_least(self, self.seq_len * self.batch_size, "tokens_per_step")
        check.at_least(self, self.tokens_per_step, "tokens")

    @property
    def batches_per_step(self) -> int:
        """Forward passes per optimiser step."""
        return max(1, self.tokens_per_step // (self.seq_len * self.batch_size))

    @property
    def warmup(self) -> int:
        """Warm-up steps (tuned-lens' default when ``warmup_steps`` is -1)."""
        if self.warmup_steps >= 0:
            return self.warmup_steps
        return min(1000, self.steps // 5) if self.optimizer == "adam" else 0

    @property
    def lr(self) -> float:
        """The learning rate applied (tuned-lens: SGD's is scaled by 1 - momentum, which PyTorch's momentum undoes)."""
        return self.lr_scale * (1 - self.momentum) if self.optimizer == "sgd" else self.lr_scale * 1e-3

    @property
    def steps(self) -> int:
        """Optimiser steps of the whole run."""
        return max(1, self.tokens // (self.seq_len * self.batch_size * self.batches_per_step))


@dataclass
class CompareConfig(CorpusConfig):
    """Held-out comparison of the logit and the tuned lens, layer by layer."""

    tokens: int = text_field(8192, "held-out tokens (test split); whole rows of seq_len")
    seq_len: int = text_field(256, "tokens per row")
    batch_size: int = text_field(4, "rows per forward pass")

    def __post_init__(self) -> None:
        super().__post_init__()
        check.at_least(self, self.seq_len, "tokens")
