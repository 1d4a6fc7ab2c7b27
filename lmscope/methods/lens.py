"""The logit lens (nostalgebraist 2020; SPEC §3): read every residual stream through the final norm and W_U.

Row ``i`` of every array is the residual stream h^i: row 0 is the embeddings (the input of block 0) and row
``l + 1`` is the output of block ``l`` (``Site(l, "resid_post")``), so the last row is the model's own output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmscope.io import Result
from lmscope.model.lm import LM
from lmscope.model.sites import Site


@dataclass
class LensConfig:
    """Options of the logit lens."""

    top_k: int = field(default=10, metadata={"help": "tokens kept per (layer, position)"})

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")


@dataclass
class LogitLensResult(Result):
    """Top-k tokens, KL(final || layer) and entropy for every layer and position of one prompt."""

    model: str
    prompt: str
    tokens: list[str]  # (pos,) the prompt's tokens as text
    layer_labels: list[str]  # (n_layers + 1,) "embed", "0", ..., str(n_layers - 1)
    top_ids: torch.Tensor  # (n_layers + 1, pos, k) int64
    top_probs: torch.Tensor  # (n_layers + 1, pos, k) float32
    top_tokens: list[list[list[str]]]  # (n_layers + 1, pos, k) the top_ids as text
    kl: torch.Tensor  # (n_layers + 1, pos) KL(P_final || P_layer), nats
    entropy: torch.Tensor  # (n_layers + 1, pos) entropy of P_layer, nats
    config: LensConfig = field(default_factory=LensConfig)

    @property
    def n_rows(self) -> int:
        """Number of residual streams read (n_layers + 1)."""
        return len(self.layer_labels)

    def top_token(self, row: int = -1, pos: int = -1) -> str:
        """The most likely next token read from residual ``row`` at position ``pos``."""
        return self.top_tokens[row][pos][0]


def _row_stats(logits: torch.Tensor, final_logp: torch.Tensor, k: int):
    """Top-k, KL(final || this) and entropy for one residual row. logits: (pos, vocab)."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # (pos, vocab)
    kl = (final_logp.exp() * (final_logp - logp)).sum(-1)  # (pos,)
    entropy = -(logp.exp() * logp).sum(-1)  # (pos,)
    top = logp.topk(k, dim=-1)
    return top.indices, top.values.exp(), kl.clamp_min(0.0), entropy


@torch.no_grad()
def logit_lens(lm: LM, prompt: str, config: LensConfig | None = None) -> LogitLensResult:
    """Apply the final norm and W_U to every residual stream h^0..h^L of ``prompt`` (SPEC §3)."""
    config = config or LensConfig()
    inputs = lm.tokenize(prompt)
    sites = [Site(0, "resid_pre"), *lm.sites("resid_post")]
    logits, cache = lm.run_with_cache(inputs, sites)
    final_logp = torch.log_softmax(logits[0].float(), dim=-1)  # (pos, vocab)
    k = min(config.top_k, lm.vocab_size)
    rows = [_row_stats(lm.unembed(cache[s][0]), final_logp, k) for s in sites]
    top_ids, top_probs, kl, entropy = (torch.stack(t) for t in zip(*rows))
    return LogitLensResult(
        model=lm.name,
        prompt=prompt,
        tokens=lm.to_str_tokens(inputs["input_ids"][0]),
        layer_labels=["embed", *(str(i) for i in range(lm.n_layers))],
        top_ids=top_ids.cpu(),
        top_probs=top_probs.cpu(),
        top_tokens=[[lm.to_str_tokens(pos) for pos in row] for row in top_ids],
        kl=kl.cpu(),
        entropy=entropy.cpu(),
        config=config,
    )
