"""Causal checks of found neurons (Pan et al. 2024 §3.2; Schwettmann et al. 2023).

Ablate them (zero / mean / noise) against random sets of the same size, and measure their sensitivity and
specificity over other inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from lmscope.data.activations import CorpusConfig, activation_batches
from lmscope.errors import InputError
from lmscope.methods.neurons.config import AblationConfig
from lmscope.methods.neurons.result import AblationResult, NeuronResult, SensitivityResult
from lmscope.methods.neurons.scores import last_positions
from lmscope.methods.neurons.vision import image_mask
from lmscope.model.generate import pad_token
from lmscope.model.hooks import Op, apply
from lmscope.model.lm import LM
from lmscope.model.sites import Site
from lmscope.progress import tqdm
from lmscope.running import Mean

Neurons = Sequence[Sequence[int]]  # [(layer, neuron), ...]


@torch.no_grad()
def key_stats(lm: LM, layers: Sequence[int], corpus: str = "wiki", tokens: int = 16_384) -> dict[int, tuple]:
    """{layer: (mean, std)} of every MLP key over ``tokens`` corpus tokens (test split), each (d_mlp,)."""
    sites = [Site(layer, "mlp_key") for layer in sorted(set(layers))]
    first, second = {s: Mean((lm.d_mlp,)) for s in sites}, {s: Mean((lm.d_mlp,)) for s in sites}
    text = CorpusConfig(corpus, "test", tokens, min(128, lm.context_length or 128), 8, drop_special=False,
                        drop_first=False, sink_factor=0.0)  # every position, as the ablations see them
    for batch in activation_batches(lm, sites, text, stop_after=sites[-1]):
        for s in sites:
            x = batch.kept(s)  # (tokens, d_mlp)
            first[s].update(x)
            second[s].update(x.pow(2))
    out = {}
    for s in sites:
        mean = first[s].mean()
        out[s.layer] = (mean, (second[s].mean() - mean.pow(2)).clamp_min(0).sqrt())
    return out


def ablation_ops(neurons: Neurons, config: AblationConfig, stats: dict[int, tuple] | None = None,
                 generator: torch.Generator | None = None) -> list[Op]:
    """Hook ops that ablate ``neurons`` at every position (zero, mean or added Gaussian noise)."""
    by_layer: dict[int, list[int]] = {}
    for layer, neuron in neurons:
        by_layer.setdefault(int(layer), []).append(int(neuron))
    ops = []
    for layer, idx in by_layer.items():
        cols = torch.tensor(idx)

        def fn(x: torch.Tensor, cols=cols, layer=layer) -> torch.Tensor:
            x = x.clone()
            c = cols.to(x.device)
            if config.mode == "zero":
                x[..., c] = 0
            elif config.mode == "mean":
                x[..., c] = stats[layer][0][cols].to(x.device, x.dtype)
            else:
                noise = torch.randn(x[..., c].shape, generator=generator).to(x.device, x.dtype)
                x[..., c] += config.noise_scale * noise * stats[layer][1][cols].to(x.device, x.dtype)
            return x
        ops.append(apply(Site(layer, "mlp_key"), fn))
    return ops


@torch.no_grad()
def _measure(lm: LM, inputs: dict, target: int, ops: list[Op], new_tokens: int) -> tuple[float, bool, bool]:
    """(P(target) at the last position, target is the argmax, target among the greedy continuation) under ``ops``."""
    with lm.hooks(*ops):
        logits = lm(inputs)[0, -1].float()
        generated = True
        if new_tokens:
            out = lm.model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, pad_token_id=pad_token(lm))
            generated = target in out[0, inputs["input_ids"].shape[1]:].tolist()
    return float(logits.softmax(-1)[target]), int(logits.argmax()) == target, generated


def random_sets(layers: Sequence[int], d_mlp: int, size: int, n: int, exclude: Neurons,
                generator: torch.Generator) -> list[list[list[int]]]:
    """``n`` sets of ``size`` neurons drawn uniformly from the scored layers, none of them in ``exclude``."""
    banned = {(int(a), int(b)) for a, b in exclude}
    total = len(layers) * d_mlp
    sets = []
    for _ in range(n):
        picked: list[list[int]] = []
        while len(picked) < size:
            li, neuron = divmod(int(torch.randint(total, (1,), generator=generator)), d_mlp)
            pair = (layers[li], neuron)
            if pair not in banned and list(pair) not in picked:
                picked.append(list(pair))
        sets.append(picked)
    return sets


def ablate_neurons(lm: LM, found: NeuronResult, config: AblationConfig | None = None,
                   top_k: int | None = None, inputs: Sequence[Mapping] | None = None) -> AblationResult:
    """Ablate each prompt's top neurons and, as the control, random sets of the same size.

    ``top_k``: ablate each prompt's first ``top_k`` reported neurons (default all). ``inputs``: one model input per
    row of ``found`` (e.g. image + text from a processor, one row each) instead of its prompts' text. Measures
    P(target), whether it is the argmax and whether the greedy continuation still contains it, before and after.
    """
    config = config or AblationConfig()
    gen = torch.Generator().manual_seed(config.control_seed)
    stats = key_stats(lm, found.layers, config.corpus, config.mean_tokens) if config.mode != "zero" else None
    rows: dict[str, list] = {k: [] for k in ("neurons", "p0", "p1", "rand", "t0", "t1", "g0", "g1", "rgen")}
    for b, prompt in enumerate(tqdm(found.prompts, desc="ablate", unit="prompt", disable=len(found.prompts) < 2)):
        row = dict(inputs[b]) if inputs is not None else lm.tokenize(prompt)
        target = found.target_ids[b]
        neurons = [[n["layer"], n["neuron"]] for n in found.top[b][:top_k]]
        p0, t0, g0 = _measure(lm, row, target, [], config.new_tokens)
        p1, t1, g1 = _measure(lm, row, target, ablation_ops(neurons, config, stats, gen), config.new_tokens)
        rand = [_measure(lm, row, target, ablation_ops(s, config, stats, gen), config.new_tokens)
                for s in random_sets(found.layers, lm.d_mlp, len(neurons), config.random_sets, neurons, gen)]
        for key, value in zip(rows, (neurons, p0, p1, [r[0] for r in rand], t0, t1, g0, g1, [r[2] for r in rand])):
            rows[key].append(value)
    return AblationResult(
        model=lm.name, prompts=found.prompts, targets=found.targets, neurons=rows["neurons"],
        prob_before=rows["p0"], prob_after=rows["p1"], random_after=torch.tensor(rows["rand"]).reshape(
            len(found.prompts), config.random_sets), top1_before=rows["t0"], top1_after=rows["t1"],
        generated_before=rows["g0"], generated_after=rows["g1"],
        random_generated=torch.tensor(rows["rgen"], dtype=torch.float32).reshape(len(found.prompts),
                                                                                config.random_sets),
        config=config)


@torch.no_grad()
def last_keys(lm: LM, prompts: Sequence[str | Mapping], layers: Sequence[int], batch_size: int = 8) -> torch.Tensor:
    """(n_prompts, n_layers, d_mlp) MLP keys at each prompt's last token (a prompt: text, or a model input)."""
    sites = [Site(layer, "mlp_key") for layer in layers]
    out = []
    step = batch_size if all(isinstance(p, str) for p in prompts) else 1
    for start in range(0, len(prompts), step):
        chunk = prompts[start:start + step]
        inputs = dict(chunk[0]) if isinstance(chunk[0], Mapping) else lm.tokenize(list(chunk))
        inputs.setdefault("attention_mask", torch.ones_like(inputs["input_ids"]))
        _, cache = lm.run_with_cache(inputs, sites, stop_after=max(sites, key=lambda s: s.layer))
        last = last_positions(inputs["attention_mask"])
        rows = torch.arange(last.shape[0])
        out.append(torch.stack([cache[s][rows, last].float().cpu() for s in sites], 1))
    return torch.cat(out)


def image_keys(lm: LM, prompts: Sequence[str | Mapping], layers: Sequence[int]) -> torch.Tensor:
    """(n_prompts, n_layers, d_mlp) each neuron's peak MLP key over a model input's image tokens."""
    sites = [Site(layer, "mlp_key") for layer in layers]
    out = []
    for prompt in prompts:
        if not isinstance(prompt, Mapping):
            raise InputError("sensitivity at the image tokens needs image inputs (built with the model's processor), "
                             f"got {prompt!r}")
        inputs = dict(prompt)
        inputs.setdefault("attention_mask", torch.ones_like(inputs["input_ids"]))
        mask = image_mask(lm, inputs["input_ids"])[0]  # (pos,): raises for a text model or an input with no image
        _, cache = lm.run_with_cache(inputs, sites, stop_after=max(sites, key=lambda s: s.layer))
        out.append(torch.stack([cache[s][0, mask].float().amax(0).cpu() for s in sites]))
    return torch.stack(out)


def sensitivity(lm: LM, neurons: Neurons, same: Sequence[str | Mapping], other: Sequence[str | Mapping],
                quantile: float = 0.99, site: str = "last") -> SensitivityResult:
    """Activations of ``neurons`` on same-concept and other-concept prompts.

    A prompt is text or a model input (e.g. an image and its text from a processor). ``site``: ``last``, the last
    token (Pan et al.'s neurons, found there); ``image``, each neuron's peak over the image tokens (one image input
    per prompt: the neurons of patch maps act there). A neuron fires on a prompt where it is in its layer's top
    ``1 - quantile`` at that site.
    """
    if not neurons:
        raise InputError("no neurons to check")
    if site not in ("last", "image"):
        raise InputError(f"site must be 'last' or 'image', got {site!r}")
    read_keys = last_keys if site == "last" else image_keys
    layers = sorted({int(layer) for layer, _ in neurons})
    li = torch.tensor([layers.index(int(layer)) for layer, _ in neurons])
    ni = torch.tensor([int(n) for _, n in neurons])

    def read(prompts: Sequence[str | Mapping]) -> tuple[torch.Tensor, torch.Tensor]:
        if not prompts:
            return torch.empty(0, len(neurons)), torch.empty(0, len(neurons))
        keys = read_keys(lm, prompts, layers)  # (n, n_layers, d_mlp)
        threshold = keys.quantile(quantile, dim=-1)  # (n, n_layers)
        acts = keys[:, li, ni]  # (n, n_neurons)
        return acts, (acts >= threshold[:, li]).float()

    same_acts, same_fires = read(same)
    other_acts, other_fires = read(other)
    return SensitivityResult(model=lm.name, neurons=[[int(a), int(b)] for a, b in neurons],
                             same_prompts=[_label(p, i) for i, p in enumerate(same)],
                             other_prompts=[_label(p, i) for i, p in enumerate(other)], same=same_acts,
                             other=other_acts, same_fires=same_fires, other_fires=other_fires, quantile=quantile,
                             site=site)


def _label(prompt: str | Mapping, i: int) -> str:
    return prompt if isinstance(prompt, str) else f"input {i}"
