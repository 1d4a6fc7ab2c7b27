"""Find the MLP neurons that write a target token: :func:`find_neurons` (Pan et al. 2024; Schwettmann et al. 2023)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch

from lmscope.errors import ConfigError, InputError
from lmscope.methods.neurons.config import NeuronConfig
from lmscope.methods.neurons.result import NeuronResult
from lmscope.methods.neurons.scores import (
    OWN,
    Scored,
    last_positions,
    score_batch,
    spearman,
    vocab_projections,
)
from lmscope.model.lm import LM
from lmscope.model.sites import Site
from lmscope.model.tokens import target_ids
from lmscope.progress import listening_now, tqdm

log = logging.getLogger(__name__)


def resolve_targets(lm: LM, prompts: Sequence[str], targets: Sequence[str | None] | None,
                    notes: list[str]) -> torch.Tensor:
    """(batch,) target ids: each given target's first token (noted when it has more), else :data:`OWN`.

    :data:`OWN` is the model's next token, read from the scoring pass itself (no forward here).
    """
    targets = list(targets) if targets is not None else [None] * len(prompts)
    if len(targets) != len(prompts):
        raise InputError(f"{len(targets)} targets for {len(prompts)} prompts: give one per prompt (or none)")
    ids = []
    for i, target in enumerate(targets):
        if target is None:
            ids.append(OWN)
            continue
        tokens = target_ids(lm, target)
        if len(tokens) > 1:
            first = lm.to_str_tokens(tokens[:1])[0]
            notes.append(f"prompt {i}: target {target!r} is {len(tokens)} tokens; scoring its first, {first!r}")
            log.warning(notes[-1])
        ids.append(tokens[0])
    return torch.tensor(ids)


def scored_layers(lm: LM, config: NeuronConfig) -> list[int]:
    """The layers the config scores (all by default), checked against the model."""
    return [lm.check(Site(layer, "mlp_key")).layer for layer in (config.layers or range(lm.n_layers))]


def _rank(scores: torch.Tensor) -> torch.Tensor:
    """1-based rank of every entry of a flat score vector (1 = largest)."""
    order = scores.flatten().argsort(descending=True)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(1, order.numel() + 1)
    return ranks.view(scores.shape)


def _top(lm: LM, layers: list[int], s: Scored, b: int, config: NeuronConfig,
         by: str | None = None) -> tuple[list[dict], list[int]]:
    """The top-k neurons of prompt ``b`` by ``by`` (default the first method), with both scores, ranks, vocabulary."""
    primary = getattr(s, by) if by else s.contribution if s.contribution is not None else s.gradxact
    d_mlp = primary.shape[-1]
    flat = primary[b].flatten().topk(config.top_k).indices.tolist()
    ranks = {name: _rank(v[b]) for name, v in (("contribution", s.contribution), ("gradxact", s.gradxact))
             if v is not None}
    rows = []
    for idx in flat:
        li, neuron = divmod(idx, d_mlp)
        row = {"layer": layers[li], "neuron": neuron}
        for name, v in (("contribution", s.contribution), ("gradxact", s.gradxact)):
            row[name] = float(v[b, li, neuron]) if v is not None else None
            row[f"rank_{name}"] = int(ranks[name][li, neuron]) if name in ranks else None
        rows.append({**row, "vocab": [], "vocab_bottom": []})  # filled by assemble, for all prompts at once
    return rows, flat


def _agreement(s: Scored, b: int, k: int) -> tuple[float, float]:
    """(Spearman over every neuron, fraction of shared top-k) of the two scores; NaN with one method."""
    if s.contribution is None or s.gradxact is None:
        return math.nan, math.nan
    a, g = s.contribution[b].flatten(), s.gradxact[b].flatten()
    shared = set(a.topk(k).indices.tolist()) & set(g.topk(k).indices.tolist())
    return spearman(a, g), len(shared) / k


def find_neurons(lm: LM, prompts: str | Sequence[str], targets: str | Sequence[str | None] | None = None,
                 config: NeuronConfig | None = None, batch_size: int = 8) -> NeuronResult:
    """Score every MLP neuron of every (configured) layer for each prompt's target token at its last position.

    ``targets``: one text per prompt (its first token is scored; a note says so when it has more), or None for the
    model's own next token. Prompts run ``batch_size`` at a time, right-padded.
    """
    config = config or NeuronConfig()
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if isinstance(targets, str):
        targets = [targets]
    if not prompts:
        raise InputError("no prompts: give at least one")
    layers = scored_layers(lm, config)
    if config.top_k > len(layers) * lm.d_mlp:
        raise ConfigError(f"top-k {config.top_k} is larger than the {len(layers) * lm.d_mlp} neurons scored")
    notes: list[str] = []
    tids = resolve_targets(lm, prompts, targets, notes)
    parts = new_parts()
    for start in tqdm(range(0, len(prompts), batch_size), desc="neurons", unit="batch",
                      disable=len(prompts) <= batch_size and not listening_now()):
        inputs = lm.tokenize(prompts[start:start + batch_size])
        score_chunk(lm, inputs, tids[start:start + batch_size], layers, config, parts, config.positions)
    return assemble(lm, prompts, layers, config, parts, notes)


def new_parts() -> dict[str, list]:
    """Empty per-chunk accumulators for :func:`score_chunk`."""
    return {k: [] for k in ("contribution", "gradxact", "top", "acts", "prob", "agree", "overlap", "tokens",
                            "patch", "targets", "image_top", "image_acts")}


def _padded(rows: list[torch.Tensor]) -> torch.Tensor:
    """Stack (k, n_b) rows into (batch, k, max n), NaN-padded."""
    width = max(a.shape[-1] for a in rows)
    return torch.stack([torch.nn.functional.pad(a, (0, width - a.shape[-1]), value=math.nan) for a in rows])


def assemble(lm: LM, prompts: list[str], layers: list[int], config: NeuronConfig, parts: dict[str, list],
             notes: list[str]) -> NeuronResult:
    """The :class:`NeuronResult` of every scored chunk (the top neurons' vocabularies in one pass over W_U)."""
    empty = torch.empty(0)
    tids = torch.cat(parts["targets"])
    every = parts["top"] + parts["image_top"]
    vocab = vocab_projections(lm, [(t["layer"], t["neuron"]) for tops in every for t in tops], config.vocab_top)
    for tops in every:
        for t in tops:
            t["vocab"], t["vocab_bottom"] = vocab[(t["layer"], t["neuron"])]
    return NeuronResult(
        model=lm.name, prompts=prompts, targets=lm.to_str_tokens(tids), target_ids=tids.tolist(),
        tokens=parts["tokens"], layers=layers,
        contribution=torch.cat(parts["contribution"]) if parts["contribution"] else empty,
        gradxact=torch.cat(parts["gradxact"]) if parts["gradxact"] else empty, top=parts["top"],
        top_acts=_padded(parts["acts"]), target_prob=parts["prob"], agreement=parts["agree"],
        overlap=parts["overlap"], notes=notes, config=config,
        patch_acts=_padded(parts["patch"]) if parts["patch"] else empty, top_image=parts["image_top"],
        image_acts=_padded(parts["image_acts"]) if parts["image_acts"] else empty)


def score_chunk(lm: LM, inputs: dict, tids: torch.Tensor, layers: list[int], config: NeuronConfig,
                parts: dict[str, list], positions: str | torch.Tensor,
                image: torch.Tensor | None = None) -> None:
    """Score one batch of inputs and append its pieces to ``parts``.

    ``positions``: where gradient x activation sums ("last", "all" or a (batch, pos) mask). ``image``: a (batch,
    pos) mask of image tokens; the top neurons' activations there go to ``parts["patch"]``, and the top neurons by
    gradient x activation (summed over ``positions``: pass the image mask) and theirs to ``parts["image_top"]`` and
    ``parts["image_acts"]``.
    """
    s = score_batch(lm, inputs, tids, layers, config.method, config.grad_site, positions)
    parts["targets"].append(s.targets)
    mask = inputs.get("attention_mask", torch.ones_like(inputs["input_ids"]))
    last = last_positions(mask)
    probs = s.logits.softmax(-1)[torch.arange(len(last)), s.targets.to(s.logits.device)]
    for b in range(len(last)):
        n = int(last[b]) + 1
        top, flat = _top(lm, layers, s, b, config)
        li, ni = _split(flat, lm.d_mlp)
        parts["acts"].append(s.keys[b, li, :n, ni].cpu())  # (top_k, n)
        if image is not None:
            parts["patch"].append(_at(s.keys[b], flat, lm.d_mlp, image[b]))  # (top_k, patches)
        if image is not None and s.gradxact is not None:
            image_top, image_flat = _top(lm, layers, s, b, config, by="gradxact")
            parts["image_top"].append(image_top)
            parts["image_acts"].append(_at(s.keys[b], image_flat, lm.d_mlp, image[b]))  # (top_k, patches)
        parts["top"].append(top)
        parts["tokens"].append(lm.to_str_tokens(inputs["input_ids"][b, :n]))
        parts["prob"].append(float(probs[b]))
        agree, overlap = _agreement(s, b, config.top_k)
        parts["agree"].append(agree)
        parts["overlap"].append(overlap)
    if s.contribution is not None:
        parts["contribution"].append(s.contribution.cpu())
    if s.gradxact is not None:
        parts["gradxact"].append(s.gradxact.cpu())


def _split(flat: list[int], d_mlp: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(layer indices, neuron indices), each (k,), of flat indices into (n_layers, d_mlp)."""
    return torch.tensor([i // d_mlp for i in flat]), torch.tensor([i % d_mlp for i in flat])


def _at(keys: torch.Tensor, flat: list[int], d_mlp: int, where: torch.Tensor) -> torch.Tensor:
    """(k, n) activations of the neurons ``flat`` at the positions ``where`` (pos,) bool.

    ``keys``: (n_layers, pos, d_mlp).
    """
    li, ni = _split(flat, d_mlp)
    return keys[li, :, ni][:, where.to(keys.device)].cpu()
