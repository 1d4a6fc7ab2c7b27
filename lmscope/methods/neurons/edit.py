"""Neuron editing (Pan et al. 2024 §3.1): move one neuron's contribution from token v0 to token v1.

The neuron's output weights w (its column of W_out, d_model) become w' = argmin o (w'.u_v0 - w'.u_v1) + beta |o|
|w' - w|_2, with u_v the unembedding row of v and o the neuron's activation on the prompt (beta scaled by |o|).
Adam on w' stops once the neuron's contribution to v1 exceeds that to v0 by the margin. The edit is data
(:class:`NeuronEdit`, savable); :func:`apply_neuron_edit` applies it and returns a handle whose ``undo()``
restores W_out bit for bit.
"""

from __future__ import annotations

import torch

from lmscope.errors import EditError, InputError
from lmscope.methods.neurons.config import NeuronEditConfig
from lmscope.methods.neurons.result import NeuronEdit
from lmscope.model.edits import apply_w_out_edit, weight_digest
from lmscope.model.lm import LM
from lmscope.model.sites import Site
from lmscope.model.tokens import target_ids
from lmscope.model.weights import EditHandle

NeuronEditHandle = EditHandle  # EditHandle[NeuronEdit]: the name neuron edits had before the shared handle


def _one_token(lm: LM, text: str) -> int:
    ids = target_ids(lm, text)
    if len(ids) != 1:
        raise InputError(f"{text!r} is {len(ids)} tokens; a neuron edit moves a contribution between single tokens")
    return ids[0]


@torch.no_grad()
def neuron_activation(lm: LM, layer: int, neuron: int, prompt: str) -> float:
    """The neuron's MLP key at the prompt's last token."""
    site = Site(layer, "mlp_key")
    _, cache = lm.run_with_cache(prompt, [site], stop_after=site)
    return float(cache[site][0, -1, neuron])


def neuron_edit(lm: LM, layer: int, neuron: int, v0: str, v1: str, prompt: str | None = None,
                config: NeuronEditConfig | None = None) -> EditHandle[NeuronEdit]:
    """Edit ``lm`` in place so that neuron ``neuron`` of ``layer`` writes toward ``v1`` instead of ``v0``.

    ``prompt``: the input whose activation o weighs the loss (default o = 1). Returns the undo handle.
    """
    config = config or NeuronEditConfig()
    layer = lm.check(Site(layer, "mlp_key")).layer
    if not 0 <= neuron < lm.d_mlp:
        raise InputError(f"neuron {neuron} is out of range: layer {layer} has {lm.d_mlp} neurons (0..{lm.d_mlp - 1})")
    v0_id, v1_id = _one_token(lm, v0), _one_token(lm, v1)
    if v0_id == v1_id:
        raise InputError(f"v0 and v1 are the same token ({v0!r})")
    o = neuron_activation(lm, layer, neuron, prompt) if prompt else 1.0
    w = lm.W_out(layer)[:, neuron].detach().float()  # (d_model,)
    u0, u1 = lm.W_U[v0_id].detach().float(), lm.W_U[v1_id].detach().float()
    delta, losses = _optimise(w, u0, u1, o, config)
    new = w + delta

    def contrib(vec: torch.Tensor) -> list[float]:
        return [float(o * vec @ u0), float(o * vec @ u1)]
    edit = NeuronEdit(model=lm.name, layer=layer, neuron=neuron, v0=v0, v1=v1, v0_id=v0_id, v1_id=v1_id,
                      activation=o, delta=delta.cpu(), weights=weight_digest(lm, layer),
                      contribution_before=contrib(w), contribution_after=contrib(new), losses=losses,
                      prompt=prompt or "", config=config)
    return apply_neuron_edit(lm, edit)


def _optimise(w: torch.Tensor, u0: torch.Tensor, u1: torch.Tensor, o: float,
              config: NeuronEditConfig) -> tuple[torch.Tensor, list[float]]:
    """Delta (d_model,) minimising o (w'.u0 - w'.u1) + beta |o| |delta|_2 with w' = w + delta, and the losses.

    beta is scaled by |o| so that a weakly firing neuron moves as readily as a strong one (the minimiser of the
    paper's loss is unchanged up to the scale of beta).
    """
    if o == 0:
        raise EditError("the neuron does not fire on this prompt (activation 0): its contribution cannot move")
    delta = torch.zeros_like(w, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=config.lr)
    sign = 1.0 if o > 0 else -1.0
    losses = []
    for _ in range(config.steps):
        new = w + delta
        if sign * (new @ (u1 - u0)) > config.margin:
            break
        with torch.enable_grad():
            loss = o * (new @ u0 - new @ u1) + config.beta * abs(o) * (delta.pow(2).sum() + 1e-12).sqrt()
            opt.zero_grad()
            loss.backward()
        opt.step()
        losses.append(loss.item())
    return delta.detach(), losses


def apply_neuron_edit(lm: LM, edit: NeuronEdit, check: bool = True) -> EditHandle[NeuronEdit]:
    """Apply a (possibly reloaded) neuron edit; ``lm`` must hold the W_out it was computed on."""
    if not 0 <= edit.neuron < lm.d_mlp or edit.delta.shape != (lm.d_model,):
        raise EditError(f"this neuron edit (neuron {edit.neuron}, delta {tuple(edit.delta.shape)}) does not fit "
                        f"{lm.name}'s MLPs ({lm.d_mlp} neurons of width {lm.d_model})")

    def delta(transposed: bool) -> torch.Tensor:
        full = torch.zeros(lm.d_model, lm.d_mlp)  # W_out's (d_model, d_mlp) view
        full[:, edit.neuron] = edit.delta
        return full.T if transposed else full

    return apply_w_out_edit(lm, edit.layer, edit, delta, edit.weights if check else None,
                            f"neuron edit ({edit.model})")
