"""The lens of one prompt: every residual stream read as a prediction, through one readout.

The logit lens (nostalgebraist 2020: the final norm and W_U) or a tuned lens (a translator per layer first), as
``LensConfig.readout`` chooses (:mod:`lmscope.model.readout`).

Row ``i`` of every array is the residual stream h^i: row 0 is the embeddings (the input of block 0) and row
``l + 1`` is the output of block ``l`` (``Site(l, "resid_post")``), so the last row is the model's own output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmscope.io import Result
from lmscope.methods.lens.config import LensConfig
from lmscope.model.lm import LM
from lmscope.model.readout import LOGIT, Readout, resolve_readout
from lmscope.model.sites import Site
from lmscope.progress import listening_now, tqdm

__all__ = ["LogitLensResult", "logit_lens"]


@dataclass
class LogitLensResult(Result):
    """Top-k tokens, KL(final || layer) and entropy for every layer and position of one prompt.

    Read through one readout: ``readout["label"]`` is "logit lens" or "tuned lens".
    """

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
    readout: dict = field(default_factory=LOGIT.describe)  # the readout used: kind, label (and a tuned lens' source)

    @property
    def n_rows(self) -> int:
        """Number of residual streams read (n_layers + 1)."""
        return len(self.layer_labels)

    def top_token(self, row: int = -1, pos: int = -1) -> str:
        """The most likely next token read from residual ``row`` at position ``pos``."""
        return self.top_tokens[row][pos][0]

    def summary(self) -> dict:
        """Per layer: the top-k at the last position, its KL and entropy, and the top-1 token at every position."""
        rows = [{"layer": label,
                 "top_last": [[t, round(float(p), 5)] for t, p in zip(self.top_tokens[i][-1], self.top_probs[i, -1])],
                 "kl_last": float(self.kl[i, -1]), "entropy_last": float(self.entropy[i, -1]),
                 "top1": [pos[0] for pos in self.top_tokens[i]]}
                for i, label in enumerate(self.layer_labels)]
        return {"model": self.model, "prompt": self.prompt, "readout": self.readout, "tokens": self.tokens,
                "top_k": self.config.top_k, "layers": rows}

    @property
    def readout_label(self) -> str:
        """"logit lens" or "tuned lens"."""
        return self.readout.get("label", "logit lens")


def _row_stats(logits: torch.Tensor, final_logp: torch.Tensor, k: int, final_p: torch.Tensor | None = None):
    """Top-k, KL(final || this) and entropy for one residual row. logits: (pos, vocab)."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # (pos, vocab)
    final_p = final_logp.exp() if final_p is None else final_p
    kl = (final_p * (final_logp - logp)).sum(-1)  # (pos,)
    entropy = -(logp.exp() * logp).sum(-1)  # (pos,)
    top = logp.topk(k, dim=-1)
    return top.indices, top.values.exp(), kl.clamp_min(0.0), entropy


UNEMBED_ROWS = 512  # (layer, position) rows unembedded per matmul: W_U is read once per group, not once per layer


def _chunk_stats(lm: LM, streams: list[torch.Tensor], final_logits: torch.Tensor, k: int, bar: tqdm,
                 readout: Readout = LOGIT):
    """Top-k, KL and entropy of every residual stream at a few positions: (n_rows, chunk[, k]) each.

    Several layers are unembedded in one matmul (at most :data:`UNEMBED_ROWS` rows): for a short prompt one
    product reads the (vocab x d_model) unembedding once instead of once per layer.
    """
    final_logp = torch.log_softmax(final_logits.float(), dim=-1)  # (chunk, vocab)
    final_p = final_logp.exp()
    n_pos, per = streams[0].shape[0], max(1, UNEMBED_ROWS // streams[0].shape[0])
    rows = []
    for g in range(0, len(streams), per):
        group = [readout.transform_hidden(h, g + j) for j, h in enumerate(streams[g:g + per])]
        logits = lm.unembed(torch.cat(group)).view(len(group), n_pos, -1)  # (layers, chunk, vocab)
        rows += [_row_stats(layer_logits, final_logp, k, final_p) for layer_logits in logits]
        bar.update(len(group) * n_pos)
    return [torch.stack(t) for t in zip(*rows)]


@torch.no_grad()
def logit_lens(lm: LM, prompt: str, config: LensConfig | None = None,
               readout: Readout | None = None) -> LogitLensResult:
    """Read every residual stream h^0..h^L of ``prompt`` through ``readout`` (default: ``config.readout``).

    Positions are unembedded ``config.chunk`` at a time, so memory grows with the prompt by the residual streams
    only, not by a (pos, vocab) logit matrix per layer (nor one for the model's own output).
    """
    config = config or LensConfig()
    readout = readout or resolve_readout(lm, config.readout)
    inputs = lm.tokenize(prompt)
    sites = [Site(0, "resid_pre"), *lm.sites("resid_post")]
    # the forward stops after the last block: the model's own logits are the last stream's, unembedded a chunk at a
    # time below, so no (pos, vocab) matrix for the whole prompt is ever held
    _, cache = lm.run_with_cache(inputs, sites, stop_after=sites[-1])
    k = min(config.top_k, lm.vocab_size)
    n_pos = inputs["input_ids"].shape[1]
    with tqdm(total=len(sites) * n_pos, desc="lens", unit="row", leave=False,
              disable=n_pos < 1024 and not listening_now()) as bar:
        chunks = [_chunk_stats(lm, [cache[s][0, i:i + config.chunk] for s in sites],
                               lm.unembed(cache[sites[-1]][0, i:i + config.chunk]), k, bar, readout)
                  for i in range(0, n_pos, config.chunk)]
    top_ids, top_probs, kl, entropy = (torch.cat(parts, dim=1) for parts in zip(*chunks))
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
        readout=readout.describe(),
    )
