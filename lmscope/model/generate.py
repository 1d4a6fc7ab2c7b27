"""Text generation for the methods: greedy continuations, per-row seeded top-k samples, and samples from BOS.

Every sampler here is seeded and independent of batching: a row's text is the same alone or in any batch (up to
float rounding), so runs are reproducible and resumable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from lmscope.model.lm import LM
from lmscope.model.tokens import pad


def pad_token(lm: LM) -> int:
    """The tokenizer's padding id, else its end-of-text id, else 0."""
    for tid in (lm.tokenizer.pad_token_id, lm.tokenizer.eos_token_id):
        if tid is not None:
            return tid
    return 0


@torch.no_grad()
def greedy(lm: LM, text: str, new_tokens: int) -> str:
    """The greedy continuation of ``text`` (``new_tokens`` tokens at most), decoded without the prompt."""
    ids = lm.tokenize(text)["input_ids"]
    lm.check_length(ids.shape[1] + new_tokens)
    out = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                            do_sample=False, pad_token_id=pad_token(lm))
    return lm.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


class TopKPerRow:
    """A logits processor that draws each row's next token from its own seeded generator (top-k).

    It returns one-hot scores for greedy decoding to pick, so a row's sample does not depend on the other rows
    of the batch. End-of-text is never drawn: every row runs its full length.
    """

    def __init__(self, seeds: Sequence[int], top_k: int, eos: int | None):
        self.gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.top_k, self.eos = top_k, eos

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:  # scores: (rows, vocab)
        scores = scores.float()
        if self.eos is not None:
            scores[:, self.eos] = -math.inf
        top = scores.topk(self.top_k, dim=-1)
        probs = torch.softmax(top.values, -1).cpu()  # (rows, top_k)
        picks = torch.stack([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, self.gens)])
        chosen = top.indices.gather(1, picks.to(top.indices.device))  # (rows, 1)
        return torch.full_like(scores, -math.inf).scatter_(1, chosen, 0.0)


@torch.no_grad()
def sample_ids(lm: LM, prompts: Sequence[str], length: int, top_k: int, seeds: Sequence[int]) -> list[list[int]]:
    """Top-k samples after each prompt: ``length`` ids per row, the prompt's included (ROME's ``max_out_len``).

    All prompts run in one left-padded, masked batch; row i draws from a generator seeded with ``seeds[i]``.
    """
    eos, pad_id = lm.tokenizer.eos_token_id, pad_token(lm)
    rows = [lm.tokenizer(p)["input_ids"] for p in prompts]
    lm.check_length(max(length, *(len(r) for r in rows)))
    ids, mask = pad(rows, lm.device, side="left", pad_id=pad_id)
    new = length - min(len(r) for r in rows)
    out = ids
    if new > 0:
        out = lm.model.generate(input_ids=ids, attention_mask=mask, do_sample=False, num_beams=1,
                                max_new_tokens=new, pad_token_id=pad_id, repetition_penalty=None,
                                logits_processor=[TopKPerRow(seeds, top_k, eos)])
    width = ids.shape[1]
    return [list(r) + out[i, width:width + max(length - len(r), 0)].tolist() for i, r in enumerate(rows)]


@torch.no_grad()
def sample_from_start(lm: LM, n: int, new_tokens: int, seed: int, top_k: int = 5) -> list[str]:
    """``n`` texts of ``new_tokens`` tokens sampled (top-k, one generator for the batch) from the start token.

    This is ROME's sampler of context prefixes; ``n = 0`` gives no texts.
    """
    if n <= 0:
        return []
    start = lm.tokenizer.bos_token_id if lm.tokenizer.bos_token_id is not None else lm.tokenizer.eos_token_id
    ids = torch.full((n, 1), start, dtype=torch.long, device=lm.device)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(new_tokens):
        top = lm.model(input_ids=ids, use_cache=False).logits[:, -1].float().topk(top_k, -1)
        choice = torch.multinomial(torch.softmax(top.values, -1).cpu(), 1, generator=gen).to(lm.device)
        ids = torch.cat([ids, top.indices.gather(1, choice)], 1)
    return lm.tokenizer.batch_decode(ids[:, 1:], skip_special_tokens=True)
