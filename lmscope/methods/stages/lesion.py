"""Layer lesions (Lad et al. 2024): delete block l, or swap blocks l and l + 1, and compare with the clean model.

:func:`lesion_sweep` measures every lesion on one batch, each started from the clean residual stream cached under
it (every layer below a lesion is identical to the clean run). :func:`lesion_prompt` shows what one lesion does
to the next-token prediction of one prompt.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from lmscope.io import Result
from lmscope.methods.stages.config import MODES, LesionConfig
from lmscope.methods.stages.metrics import Reference, Sums, compare, next_logits
from lmscope.model.lm import LM
from lmscope.model.sites import Site
from lmscope.model.surgery import delete_blocks, start_after, swap_blocks
from lmscope.progress import listening_now, tqdm


def lesion(lm: LM, mode: str, layer: int):
    """The reversible lesion ``mode`` ("delete" or "swap") of block ``layer``, as a context manager."""
    return delete_blocks(lm, layer) if mode == "delete" else swap_blocks(lm, layer)


def _lesion_context(lm: LM, mode: str, layer: int, resid: dict):
    below = nullcontext() if layer == 0 else start_after(lm, layer - 1, resid[layer - 1])
    return below, lesion(lm, mode, layer)


def lesion_sweep(lm: LM, ids: torch.Tensor, resid: dict, ref: Reference, targets: torch.Tensor, sums: Sums) -> None:
    """Every deletion and swap of one batch, each started from the clean stream under the lesion."""
    for mode in MODES:
        layers = range(lm.n_layers if mode == "delete" else lm.n_layers - 1)
        rows = torch.zeros(len(layers), 3, dtype=torch.float64)
        for layer in layers:
            below, change = _lesion_context(lm, mode, layer, resid)
            with below, change:
                kl, correct, d_entropy = compare(ref, next_logits(lm, ids), targets)
            rows[layer] = torch.stack([kl.double().cpu(), correct.double().cpu(), d_entropy.double().cpu()])
        sums.add(mode, rows)


@dataclass
class LesionResult(Result):
    """The top next tokens of one prompt, unmodified and with one block deleted (or swapped with the next)."""

    model: str
    prompt: str
    label: str  # what was done, e.g. "block 3 deleted"
    before: list[tuple[str, float]]  # (token, probability), top_k
    after: list[tuple[str, float]]
    config: LesionConfig = field(default_factory=LesionConfig)

    def summary(self) -> dict:
        """The prompt, the lesion and both top-k lists."""
        return {"model": self.model, "prompt": self.prompt, "lesion": self.label,
                "before": [list(t) for t in self.before], "after": [list(t) for t in self.after]}


def _top(lm: LM, probs: torch.Tensor, k: int) -> list[tuple[str, float]]:
    top = probs.topk(k)
    return list(zip(lm.to_str_tokens(top.indices), top.values.tolist()))


@torch.no_grad()
def lesion_prompt(lm: LM, prompt: str, config: LesionConfig | None = None) -> LesionResult:
    """Top next tokens of ``prompt`` before and during the lesion of ``config.layer``."""
    config = config or LesionConfig()
    layer = lm.check(Site(config.layer, "resid_post")).layer
    ids = lm.tokenize(prompt)["input_ids"]
    with tqdm(total=2, desc="lesion", unit="pass", leave=False, disable=not listening_now()) as bar:
        before = torch.softmax(lm(ids)[0, -1].float(), -1)
        bar.update()
        with lesion(lm, config.mode, layer):
            after = torch.softmax(lm(ids)[0, -1].float(), -1)
        bar.update()
    label = f"block {layer} deleted" if config.mode == "delete" else f"blocks {layer}, {layer + 1} swapped"
    k = min(config.top_k, lm.vocab_size)
    return LesionResult(lm.name, prompt, label, _top(lm, before, k), _top(lm, after, k), config)
