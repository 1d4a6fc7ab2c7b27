"""Options of activation patching and the metrics it reads off the patched logits.

A metric maps the logits of a batch, (batch, pos, vocab), to one number per row, (batch,). Scores are normalised
so that 0 is the corrupted run and 1 the clean run: (m_patched - m_corrupted) / (m_clean - m_corrupted).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lmscope import config as check
from lmscope.errors import ConfigError, InputError

Metric = Callable[[torch.Tensor], torch.Tensor]  # logits (batch, pos, vocab) -> (batch,)
PATCH_KINDS = ("resid_pre", "resid_post", "attn_out", "mlp_out", "heads")


@dataclass
class PatchPrompts:
    """The prompt pair and the answers the metric compares; its relations hold before any model loads.

    A pair that compares nothing is refused: the same clean and corrupted prompt, or the same answer and wrong
    answer, give a metric with no gap and an all-zero map. (The same *tokens* are refused once a tokenizer reads
    them: :func:`lmscope.methods.patching.engine.prompt_pair`, :func:`~lmscope.methods.patching.engine.answer_metric`.)
    """

    clean: str = field(metadata={"help": "the clean prompt", "required": True})
    corrupted: str = field(metadata={"help": "the corrupted prompt (same number of tokens)", "required": True})
    answer: str = field(metadata={"help": "the clean answer's text (its first token is read)", "required": True})
    wrong: str | None = field(default=None, metadata={
        "help": "a competing answer: metric = logit(answer) - logit(wrong); default: P(answer)"})

    def __post_init__(self) -> None:
        for name in ("clean", "corrupted", "answer", "wrong"):
            value = getattr(self, name)
            if value is None and name == "wrong":
                continue
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"--{name} is empty: give its text")
        if self.clean == self.corrupted:
            raise InputError(f"--clean and --corrupted are the same prompt ({self.clean!r}): patching one into the "
                             "other changes nothing; corrupt the clean prompt, e.g. replace its subject")
        if self.wrong is not None and self.answer == self.wrong:
            raise InputError(f"--answer and --wrong are the same ({self.answer!r}): their logit difference is 0 on "
                             "every run; give a competing answer, or leave --wrong out to read P(answer)")


@dataclass
class PatchConfig:
    """Which activations are patched from the clean run into the corrupted one, and how many per forward pass."""

    kinds: tuple[str, ...] = field(default=("resid_pre", "attn_out", "mlp_out"), metadata={
        "help": "resid_pre, resid_post, attn_out, mlp_out (a layer x position grid each) and heads (layer x head, "
                "every position)"})
    layers: tuple[int, ...] = field(default=(), metadata={"help": "layers to patch (empty: all)"})
    positions: tuple[int, ...] = field(default=(), metadata={"help": "positions to patch (empty: all)"})
    batch_size: int = field(default=32, metadata={"help": "patched runs per forward pass"})

    def __post_init__(self) -> None:
        self.kinds = tuple(self.kinds)
        self.layers, self.positions = tuple(map(int, self.layers)), tuple(map(int, self.positions))
        bad = [k for k in self.kinds if k not in PATCH_KINDS]
        if bad or not self.kinds:
            raise ConfigError(f"patch kinds must be among {', '.join(PATCH_KINDS)}, got {list(self.kinds)}")
        check.at_least(self, 1, "batch_size")


def logit_diff(good: int, bad: int, position: int = -1) -> Metric:
    """logit[good] - logit[bad] at ``position`` (default: the last)."""
    def metric(logits: torch.Tensor) -> torch.Tensor:
        last = logits[:, position].float()
        return last[:, good] - last[:, bad]
    return metric


def target_prob(target: int, position: int = -1) -> Metric:
    """P[target] at ``position`` (default: the last)."""
    def metric(logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits[:, position].float(), -1)[:, target]
    return metric
