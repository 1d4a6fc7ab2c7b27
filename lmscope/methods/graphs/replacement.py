"""The local replacement model of one prompt (Ameisen et al. 2025), on the unmodified model through hooks.

Every MLP's output is held at its clean value, written as the transcoder's active features (each ``a_f D_f``), the
transcoder's bias and an error node ``e_l = mlp_out_l - transcoder_l(x_l)``; a skip transcoder's linear term
``W_skip x`` stays live. Attention patterns and norm denominators are frozen at the clean run
(:class:`lmscope.model.linearize.Linearization`). The residual stream is then affine in the token embeddings and
the MLP outputs, so the effect of any node on any later pre-activation or logit is one backward pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from lmscope.methods.graphs.transcoders import LayerTranscoder
from lmscope.model.hooks import apply, capture, gradient_taps
from lmscope.model.linearize import Linearization, is_norm
from lmscope.model.lm import LM
from lmscope.model.sites import ModuleSite, Site

EMBED = Site(0, "embed")


@dataclass
class PromptState:
    """The clean run of one prompt and the nodes it makes (features sorted by layer, position, feature)."""

    ids: torch.Tensor  # (1, pos)
    lin: Linearization
    x_in: list[torch.Tensor]  # per layer (pos, d) the clean MLP inputs
    mlp_out: list[torch.Tensor]  # per layer (pos, d) the clean MLP outputs
    features: torch.Tensor  # (n, 3) long: layer, position, feature
    values: torch.Tensor  # (n,) their activations
    errors: torch.Tensor  # (n_layers, pos, d)
    tokens: torch.Tensor  # (pos, d) the token embeddings
    logits: torch.Tensor  # (vocab,) the clean logits at the last position
    transcoders: dict[int, LayerTranscoder]

    @property
    def n_pos(self) -> int:
        """Prompt length."""
        return self.ids.shape[1]

    @property
    def n_layers(self) -> int:
        """Layers (with or without a transcoder)."""
        return len(self.x_in)


def mlp_out_norms(lm: LM) -> tuple[str, ...]:
    """Paths of the norms whose output is a layer's MLP output (Gemma 2 / 3): the replacement writes them."""
    paths = {id(m): p for p, m in lm.model.named_modules()}
    modules = [lm.hook_point(Site(layer, "mlp_out")).module for layer in range(lm.n_layers)]
    return tuple(paths[id(m)] for m in modules if is_norm(m))


@torch.no_grad()
def setup(lm: LM, ids: torch.Tensor, transcoders: dict[int, LayerTranscoder], zero_first: bool = True) -> PromptState:
    """Run the prompt once: MLP inputs and outputs, active features, errors, embeddings, logits, frozen parts."""
    sites = [EMBED, *lm.sites("mlp_in"), *lm.sites("mlp_out")]
    logits, cache = lm.run_with_cache(ids, sites)
    x_in = [cache[Site(layer, "mlp_in")][0].float() for layer in range(lm.n_layers)]
    out = [cache[Site(layer, "mlp_out")][0].float() for layer in range(lm.n_layers)]
    first = 1 if zero_first else 0
    features, values, errors = [], [], torch.zeros(lm.n_layers, ids.shape[1], lm.d_model)
    for layer in range(lm.n_layers):
        tc = transcoders.get(layer)
        if tc is None:  # no transcoder: the whole MLP output is the error node
            errors[layer] = out[layer]
            continue
        acts = tc.encode(x_in[layer]).float()  # (pos, n)
        acts[:first] = 0
        errors[layer] = out[layer] - (acts @ tc.decoder + tc.bias + tc.skip_term(x_in[layer]))
        pos, feat = acts.nonzero(as_tuple=True)
        features.append(torch.stack([torch.full_like(pos, layer), pos, feat], 1))
        values.append(acts[pos, feat])
    errors[:, :first] = 0
    lin = Linearization.capture(lm, ids, exclude=mlp_out_norms(lm))
    return PromptState(ids, lin, x_in, out, torch.cat(features) if features else torch.zeros(0, 3, dtype=torch.long),
                       torch.cat(values) if values else torch.zeros(0), errors, cache[EMBED][0].float(),
                       logits[0, -1].float(), transcoders)


@dataclass
class Taps:
    """What one replacement forward pass exposes: the gradient leaves and the target inputs, per layer."""

    store: dict  # site -> (value, zero leaf): the embeddings and every MLP output
    cache: dict  # Site(l, "mlp_in") and the final norm's output, in the autograd graph


@contextmanager
def replacement(lm: LM, state: PromptState, *extra) -> Iterator[Taps]:
    """Hooks that make the model the replacement model of ``state``'s prompt (run a forward inside the block).

    The MLP outputs are their clean values plus the skip term's change; gradient leaves sit on the embeddings and
    every MLP output; every MLP input and the final norm's output are kept in the graph (the targets read them).
    ``extra`` ops run after the replacement's own (e.g. a perturbation of an MLP output).
    """
    store: dict = {}
    seen: dict[int, torch.Tensor] = {}
    ops = [*gradient_taps([EMBED], store)]
    for layer in range(lm.n_layers):
        ops += [apply(Site(layer, "mlp_in"), _reader(seen, layer)), capture(Site(layer, "mlp_in"), grad=True),
                apply(Site(layer, "mlp_out"), _writer(state, seen, layer)),
                *gradient_taps([Site(layer, "mlp_out")], store)]
    with state.lin.frozen(lm, *ops, *extra, capture(final_norm_site(lm), grad=True)) as cache:
        yield Taps(store, cache)


def final_norm_site(lm: LM) -> ModuleSite:
    """The final norm's output (the logit targets read it)."""
    return ModuleSite(lm.layout.spec.final_norm, "output")


def _reader(seen: dict, layer: int):
    def read(x: torch.Tensor) -> torch.Tensor:
        seen[layer] = x
        return x

    return read


def _writer(state: PromptState, seen: dict, layer: int):
    tc = state.transcoders.get(layer)
    clean = state.mlp_out[layer]

    def write(y: torch.Tensor) -> torch.Tensor:  # (batch, pos, d): the clean output (+ the skip term's change)
        out = clean.to(y.dtype).expand_as(y)
        if tc is not None and tc.skip is not None:
            x = seen[layer]
            out = out + tc.skip_term(x) - tc.skip_term(state.x_in[layer].to(x.dtype))
        return out.clone()

    return write
