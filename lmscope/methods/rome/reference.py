"""ROME's editing procedure as its code runs it, re-implemented faithfully: the test oracle and bench baseline.

Per request, as ``rome_main.execute_rome``: the key over the prefixes (``compute_u``, with the explicit inverse of
C), then ``compute_v``: every step runs the whole model on all rewriting prompts, computes the logits at every
position and, for the NLL, the unembedding of the last layer's output at every position once more; then a separate
forward pass reads W_out's input and output at the bare prompt. :func:`lmscope.methods.rome.edit.rome_edit` computes
the same update without the repeated work (blocks under the edit layer run once, unembedding only where the loss
reads it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmscope.methods.rome.config import EditRequest, RomeConfig
from lmscope.methods.rome.key import compute_key
from lmscope.methods.rome.value import value_batch
from lmscope.model.hooks import apply, capture
from lmscope.model.lm import LM
from lmscope.model.sites import Site
from lmscope.model.tokens import subject_last_token
from lmscope.model.weights import frozen


def _reference_v(lm: LM, request: EditRequest, layer: int, prefixes: list[str], config: RomeConfig):
    b = value_batch(lm, request, prefixes, config.kl_prompt)
    site, last = Site(layer, "mlp_value"), Site(lm.n_layers - 1, "resid_post")
    n, rows = b.n_rewrite, torch.arange(len(b.lookup))
    delta = torch.zeros(lm.d_model, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=config.v_lr)
    init: dict = {}

    def edit_output(x):
        init.setdefault("v0", x[0, b.lookup[0]].detach().float().clone())
        x = x.clone()
        x[rows, b.lookup] += delta.to(x.dtype)
        return x

    with frozen(lm.model):
        for step in range(config.v_steps):
            opt.zero_grad()
            with lm.hooks(apply(site, edit_output), capture(last, grad=True)) as tr:
                logits = lm.model(input_ids=b.ids, attention_mask=b.mask, use_cache=False).logits
            kl_logp = torch.log_softmax(logits[rows[n:], b.lookup[n:]].float(), -1)
            init.setdefault("kl0", kl_logp.detach())
            log_probs = torch.log_softmax(lm.unembed(tr[last][:n]).float(), -1)  # (n, pos, vocab), all positions
            picked = log_probs[torch.arange(n)[:, None], b.target_pos].gather(
                -1, b.target.expand(n, -1).unsqueeze(-1)).squeeze(-1)
            nll = -picked.mean(1).mean()
            kl = config.kl_factor * F.kl_div(init["kl0"], kl_logp, log_target=True, reduction="batchmean")
            loss = nll + kl + config.v_weight_decay * delta.norm() / init["v0"].norm() ** 2
            if float(loss.detach()) < config.early_stop_loss or step == config.v_steps - 1:
                break
            loss.backward()
            opt.step()
            max_norm = config.clamp_norm_factor * init["v0"].norm()
            if delta.norm() > max_norm:
                with torch.no_grad():
                    delta[...] = delta * max_norm / delta.norm()
    return init["v0"] + delta.detach()


@torch.no_grad()
def _input_output_at_word(lm: LM, request: EditRequest, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids, idx = subject_last_token(lm, request.prompt, request.subject)
    key, value = Site(layer, "mlp_key"), Site(layer, "mlp_value")
    with lm.hooks(capture(key), capture(value)) as cache:
        lm.model(input_ids=torch.tensor([ids]), use_cache=False)
    return cache[key][0, idx].float(), cache[value][0, idx].float()


def reference_update(lm: LM, request: EditRequest, layer: int, prefixes: list[str], config: RomeConfig,
                     second_moment: torch.Tensor | None) -> torch.Tensor:
    """ROME's update of W_out at ``layer`` as a (d_model, d_mlp) matrix; the model is left unchanged."""
    u = compute_key(lm, request, layer, prefixes).k_star
    if second_moment is not None:
        u = torch.inverse(second_moment.float()) @ u
    u = u / u.norm()
    v_star = _reference_v(lm, request, layer, prefixes, config)
    k, v = _input_output_at_word(lm, request, layer)
    right = (v_star - v) / torch.dot(k, u)
    return torch.outer(right, u)
