"""Token helpers shared by the methods: where a subject's tokens are, padding a batch, a target's ids.

All of them take the tokenizer's own offsets, so a subject is found however the tokenizer splits words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from lmscope.errors import InputError, SubjectError
from lmscope.model.lm import LM, check_prompt


def subject_span(lm: LM, prompt: str, subject: str, start: int | None = None) -> tuple[list[int], tuple[int, int]]:
    """Token ids of ``prompt`` and the [first, last + 1) token span of ``subject`` in it.

    ``start``: the subject's character offset (default: its first occurrence). Raises :class:`SubjectError` if
    the subject is empty, absent, or covers no token.
    """
    check_prompt(prompt)
    if not isinstance(subject, str) or not subject.strip():
        raise SubjectError("empty subject")
    enc = lm.tokenizer(prompt, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    lm.check_length(len(ids))
    begin = prompt.find(subject) if start is None else start
    if begin < 0:
        raise SubjectError(f"subject {subject!r} is not in the prompt {prompt!r}; the prompt's tokens are "
                           f"{lm.to_str_tokens(ids)}")
    end = begin + len(subject)
    inside = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > a and a < end and b > begin]
    if not inside:
        raise SubjectError(f"subject {subject!r} covers no token of {lm.to_str_tokens(ids)}")
    return ids, (inside[0], inside[-1] + 1)


def subject_last_token(lm: LM, template: str, subject: str) -> tuple[list[int], int]:
    """Token ids of ``template`` with ``subject`` put in place of its "{}", and the index of its last token."""
    ids, span = subject_span(lm, template.replace("{}", subject, 1), subject, start=template.index("{}"))
    return ids, span[1] - 1


def pad(rows: Sequence[Sequence[int]], device: torch.device | str, min_width: int = 0, *,
        side: Literal["right", "left"] = "right", pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), both (n, width) int64, padded with ``pad_id`` on ``side`` (never attended to).

    Right padding keeps positions aligned from the start (teacher forcing); left padding aligns the last tokens
    (batched generation).
    """
    width = max(min_width, *(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        at = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[i, at] = torch.tensor(list(r), dtype=torch.long)
        mask[i, at] = 1
    return ids.to(device), mask.to(device)


def target_ids(lm: LM, target: str) -> list[int]:
    """Token ids of a target continuation such as " Paris" (no special tokens)."""
    if not isinstance(target, str) or not target:
        raise InputError("empty target: give the answer's text, e.g. ' Paris'")
    ids = lm.tokenizer(target, add_special_tokens=False)["input_ids"]
    if not ids:
        raise InputError(f"target {target!r} has no tokens")
    return ids


def kept_positions(lm: LM, ids: torch.Tensor, drop_special: bool = True, drop_first: bool = True) -> torch.Tensor:
    """(batch, pos) bool: the positions an SAE learns from and is measured on.

    Special tokens (BOS, EOS, padding) and the first position of every row are left out: a row's first position is
    BOS or, in a model without one, the model's attention sink, whose activation is far from the others.
    """
    keep = torch.ones_like(ids, dtype=torch.bool)
    if drop_special:
        keep &= ~torch.isin(ids, torch.tensor(sorted(lm.tokenizer.all_special_ids), device=ids.device))
    if drop_first:
        keep[:, 0] = False
    return keep


def below_sinks(x: torch.Tensor, keep: torch.Tensor, factor: float) -> torch.Tensor:
    """``keep`` (batch, pos) without the attention-sink positions of the activations x (batch, pos, d).

    A sink has a norm above ``factor`` x the median norm of the kept positions (SmolLM2's reach ~150x the median at
    the first token of each document); ``factor`` 0 keeps all.
    """
    if factor <= 0 or not bool(keep.any()):
        return keep
    norms = x.float().norm(dim=-1)  # (batch, pos)
    return keep & (norms <= factor * norms[keep].median())
