"""Step 2 of ROME: the key k* (``compute_u`` in ROME's code, before the C^-1 adjustment)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from lmscope.methods.rome.config import EditRequest
from lmscope.model.hooks import capture
from lmscope.model.lm import LM
from lmscope.model.sites import Site
from lmscope.model.tokens import pad, subject_last_token


class Keys(NamedTuple):
    """The keys and value of one request at the edit layer."""

    k_star: torch.Tensor  # (d_mlp,) key at the subject's last token, averaged over the prefixes
    k: torch.Tensor  # (d_mlp,) key of the bare prompt
    v: torch.Tensor  # (d_model,) W_out's output there (the value before the edit)


@torch.no_grad()
def compute_key(lm: LM, request: EditRequest, layer: int, prefixes: list[str]) -> Keys:
    """k* = the MLP key (input of W_out) at the last subject token, averaged over ``prefixes``."""
    encoded = [subject_last_token(lm, p.replace("{}", request.prompt), request.subject) for p in prefixes]
    ids, mask = pad([e[0] for e in encoded], lm.device)
    idx = torch.tensor([e[1] for e in encoded], device=lm.device)
    key, value = Site(layer, "mlp_key"), Site(layer, "mlp_value")
    with lm.hooks(capture(key), capture(value), stop_after=value) as cache:
        lm.model(input_ids=ids, attention_mask=mask, use_cache=False)
    rows = torch.arange(len(prefixes), device=lm.device)
    keys = cache[key][rows, idx].float()  # (n_prefixes, d_mlp)
    bare = prefixes.index("{}")
    return Keys(keys.mean(0), keys[bare], cache[value][bare, idx[bare]].float())
