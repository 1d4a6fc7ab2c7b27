"""Step 3 of ROME: the value v* (``compute_v`` in ROME's code), optimised over the rewriting prompts.

Only what delta can change is run at every step: the blocks under the edit layer once (their residual stream is
cached), and, where the model takes a KV cache, only each prompt's positions from the subject's last token on
(the tokens before it come from one pass into the cache).
"""

from __future__ import annotations

import copy
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from lmscope.methods.rome.config import EditRequest, RomeConfig
from lmscope.model.hooks import apply, capture
from lmscope.model.kv import cache_kwargs, returned_cache, supports_prefix
from lmscope.model.lm import LM
from lmscope.model.sites import Site
from lmscope.model.surgery import start_after
from lmscope.model.tokens import pad, subject_last_token, target_ids
from lmscope.model.weights import frozen
from lmscope.progress import listening_now, tqdm

log = logging.getLogger(__name__)


class Value(NamedTuple):
    """The result of the v* optimisation."""

    v_star: torch.Tensor  # (d_model,) v0 + delta
    v0: torch.Tensor  # (d_model,) W_out's output at the subject's last token of the bare prompt
    delta: torch.Tensor  # (d_model,)
    losses: list[dict]  # per step: loss, nll, kl, decay, p_target


@dataclass
class ValueBatch:
    """The rewriting prompts (each prefix + prompt + target[:-1]) and the KL prompt, right-padded."""

    ids: torch.Tensor  # (rows, pos)
    mask: torch.Tensor  # (rows, pos)
    lookup: torch.Tensor  # (rows,) index of the subject's last token
    target_pos: torch.Tensor  # (n_rewrite, n_target) positions whose logits predict the target tokens
    target: torch.Tensor  # (n_target,)

    @property
    def n_rewrite(self) -> int:
        return self.target_pos.shape[0]


def value_batch(lm: LM, request: EditRequest, prefixes: list[str], kl_prompt: str) -> ValueBatch:
    """The rows of the v* optimisation: each prefix + prompt + target[:-1] (teacher forcing), then the KL prompt."""
    tgt = target_ids(lm, request.target)
    rows, lookup, target_pos = [], [], []
    for prefix in prefixes:
        ids, idx = subject_last_token(lm, prefix.replace("{}", request.prompt), request.subject)
        target_pos.append(list(range(len(ids) - 1, len(ids) - 1 + len(tgt))))
        rows.append(ids + tgt[:-1])  # teacher forcing: the target's tokens as ids, not re-tokenised text
        lookup.append(idx)
    kl_ids, kl_idx = subject_last_token(lm, kl_prompt, request.subject)
    ids, mask = pad([*rows, kl_ids], lm.device)
    return ValueBatch(ids, mask, torch.tensor([*lookup, kl_idx], device=lm.device),
                       torch.tensor(target_pos, device=lm.device), torch.tensor(tgt, device=lm.device))


def _value_loss(lm: LM, resid: torch.Tensor, b: ValueBatch, delta: torch.Tensor, init: dict,
                config: RomeConfig) -> tuple[torch.Tensor, dict]:
    """NLL of the target + kl_factor x KL(edited || original) on the KL prompt + weight decay (ROME's loss)."""
    n = b.n_rewrite
    h = resid[torch.arange(n, device=resid.device)[:, None], b.target_pos]  # (n, n_target, d_model)
    logp = torch.log_softmax(lm.unembed(h).float(), -1)
    nll = -logp.gather(-1, b.target.expand(n, -1).unsqueeze(-1)).squeeze(-1).mean(1)  # (n,)
    kl_rows = torch.arange(n, resid.shape[0], device=resid.device)
    kl_logp = torch.log_softmax(lm.unembed(resid[kl_rows, b.lookup[n:]]).float(), -1)  # (n_kl, vocab)
    init.setdefault("kl0", kl_logp.detach())
    kl = config.kl_factor * F.kl_div(init["kl0"], kl_logp, log_target=True, reduction="batchmean")
    decay = config.v_weight_decay * delta.norm() / init["v0"].norm() ** 2
    loss = nll.mean() + kl + decay
    parts = {k: float(v.detach()) for k, v in
             {"loss": loss, "nll": nll.mean(), "kl": kl, "decay": decay, "p_target": torch.exp(-nll).mean()}.items()}
    return loss, parts


@torch.no_grad()
def _below(lm: LM, b: ValueBatch, layer: int) -> torch.Tensor | None:
    """The residual stream after block ``layer - 1`` of every row (None for layer 0)."""
    if layer == 0:
        return None
    site = Site(layer - 1, "resid_post")
    with lm.hooks(capture(site), stop_after=site) as cache:
        lm.model(input_ids=b.ids, attention_mask=b.mask, use_cache=False)
    return cache[site]


class _FullRows:
    """Each step runs the whole (padded) rows, from the cached residual under the edit layer."""

    def __init__(self, lm: LM, b: ValueBatch, layer: int):
        self.lm, self.layer, self.view = lm, layer, b
        self.below = _below(lm, b, layer)  # blocks under the edit layer do not change: run them once

    def forward(self, ops, stop_after: Site) -> dict:
        """Run one step with ``ops``; return the hook cache."""
        with _start(self.lm, self.layer, self.below), self.lm.hooks(*ops, stop_after=stop_after) as cache:
            self.lm.model(input_ids=self.view.ids, attention_mask=self.view.mask, use_cache=False)
        return cache


class _SuffixRows(_FullRows):
    """Each step runs only the positions from each row's subject token on.

    The tokens before it do not depend on delta: their keys and values come from one pass into the model's KV
    cache (rows right-padded, the gap masked, positions given explicitly).
    """

    def __init__(self, lm: LM, b: ValueBatch, layer: int):
        super().__init__(lm, b, layer)
        cut, lengths = b.lookup.tolist(), b.mask.sum(1).tolist()
        prefix, prefix_mask = pad([r[:c] for r, c in zip(b.ids.tolist(), cut)], lm.device, min_width=1)
        ids, mask = pad([r[c:n] for r, c, n in zip(b.ids.tolist(), cut, lengths)], lm.device)
        self.mask = torch.cat([prefix_mask, mask], 1)  # (rows, prefix + suffix): the gap after each prefix is 0
        cut_t = b.lookup[:, None]
        self.positions = cut_t + torch.arange(ids.shape[1], device=lm.device)  # (rows, q)
        if self.below is not None:
            at = self.positions.clamp(max=self.below.shape[1] - 1)
            self.below = self.below.gather(1, at[..., None].expand(-1, -1, self.below.shape[-1]))
        with torch.no_grad():
            out = lm.model(input_ids=prefix, attention_mask=prefix_mask, use_cache=True)
        self._prefix, self._kwargs = returned_cache(out), cache_kwargs
        self.view = ValueBatch(ids, mask, torch.zeros_like(b.lookup), b.target_pos - cut_t[:b.n_rewrite], b.target)

    def forward(self, ops, stop_after: Site) -> dict:
        """Run one step with ``ops`` on the suffixes; return the hook cache."""
        kwargs = self._kwargs(self.lm, copy.deepcopy(self._prefix))  # a private copy: the pass appends to it
        with _start(self.lm, self.layer, self.below), self.lm.hooks(*ops, stop_after=stop_after) as cache:
            self.lm.model(input_ids=self.view.ids, attention_mask=self.mask, position_ids=self.positions, **kwargs)
        return cache


def _rows_runner(lm: LM, b: ValueBatch, layer: int) -> _FullRows:
    """Suffix rows where the model takes a reusable KV cache and no sliding window cuts the prompt short."""
    window = getattr(lm.config, "sliding_window", None)
    if supports_prefix(lm) and not (isinstance(window, int) and window < b.ids.shape[1] + 1):
        return _SuffixRows(lm, b, layer)
    return _FullRows(lm, b, layer)


def _start(lm: LM, layer: int, below: torch.Tensor | None):
    return nullcontext() if below is None else start_after(lm, layer - 1, below)


@torch.no_grad()
def _clamp(delta: torch.Tensor, max_norm: torch.Tensor) -> None:
    """Project delta back into the ball of radius max_norm (ROME's norm clamp)."""
    if delta.norm() > max_norm:
        delta.mul_(max_norm / delta.norm())


def compute_value(lm: LM, request: EditRequest, layer: int, prefixes: list[str], config: RomeConfig) -> Value:
    """ROME's v* optimisation (``compute_v``): the vector W_out should write at the subject's last token."""
    b = value_batch(lm, request, prefixes, config.kl_prompt)
    site, last = Site(layer, "mlp_value"), Site(lm.n_layers - 1, "resid_post")
    rows = torch.arange(len(b.lookup), device=lm.device)
    delta = torch.zeros(lm.d_model, device=lm.device, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=config.v_lr)
    init: dict = {}

    runner = _rows_runner(lm, b, layer)
    view = runner.view  # the rows in the coordinates the forward pass sees

    def add_delta(x: torch.Tensor) -> torch.Tensor:  # (rows, pos, d_model): delta at each subject's last token
        init.setdefault("v0", x[0, view.lookup[0]].detach().float().clone())  # row 0: the bare prompt
        at = torch.zeros_like(x[..., :1])
        at[rows, view.lookup] = 1
        return x + at * delta.to(x.dtype)

    losses = []
    bar = tqdm(total=config.v_steps, desc="v*", unit="step", leave=False, disable=not listening_now())
    with frozen(lm.model), bar:
        for step in range(config.v_steps):
            bar.update()
            opt.zero_grad()
            cache = runner.forward([apply(site, add_delta), capture(last, grad=True)], stop_after=last)
            loss, parts = _value_loss(lm, cache[last], view, delta, init, config)
            losses.append(parts)
            if float(loss.detach()) < config.early_stop_loss or step == config.v_steps - 1:
                break
            loss.backward()
            opt.step()
            _clamp(delta, config.clamp_norm_factor * init["v0"].norm())
    log.info("v*: %d steps, loss %.4f -> %.4f, P(target) %.4f -> %.4f", len(losses), losses[0]["loss"],
             losses[-1]["loss"], losses[0]["p_target"], losses[-1]["p_target"])
    return Value(init["v0"] + delta.detach(), init["v0"], delta.detach(), losses)
