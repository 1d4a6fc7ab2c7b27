"""Stages of inference (Lad, Gurnee & Tegmark 2024; SPEC §3) as one analysis with one result.

Layer lesions, logit-lens curves, attention locality, prediction / suppression neurons and MLP output norms.
Lesions (delete block l, swap blocks l and l+1) are measured against the unmodified model on a held-out sample of
a packaged corpus: KL(P_orig || P_lesioned), relative top-1 accuracy on the next token, and the entropy change,
averaged over next-token positions. Every layer below a lesion is identical to the clean run, so each lesioned pass
starts from the clean residual stream cached under it (:func:`lmscope.model.surgery.start_after`): the sweep runs
about half the blocks of the naive 2L full passes.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from lmscope.io import Result
from lmscope.model.hooks import capture
from lmscope.model.lm import LM
from lmscope.model.sites import Site
from lmscope.model.surgery import delete_blocks, start_after, swap_blocks

log = logging.getLogger(__name__)

MODES = ("delete", "swap")
METRICS = ("kl", "rel_acc", "d_entropy")


@dataclass
class StagesConfig:
    """Options of the stages analysis."""

    corpus: str = field(default="wiki", metadata={"help": "packaged corpus (wiki, bbc) or a file / folder of texts"})
    tokens: int = field(default=8192, metadata={"help": "held-out tokens (test split) for lesions, lens, locality"})
    seq_len: int = field(default=128, metadata={"help": "tokens per row"})
    batch_size: int = field(default=8, metadata={"help": "rows per forward pass"})
    locality_window: int = field(default=5, metadata={"help": "previous tokens counted as local attention"})
    kurtosis_threshold: float = field(default=10.0, metadata={
        "help": "vocabulary kurtosis above which a neuron predicts (skew > 0) or suppresses (skew < 0)"})
    skew_threshold: float = field(default=0.0, metadata={"help": "|skew| a prediction / suppression neuron exceeds"})
    top_neurons: int = field(default=10, metadata={"help": "neurons listed per class, with their top tokens"})
    top_tokens: int = field(default=8, metadata={"help": "tokens shown per listed neuron"})


@dataclass
class StagesResult(Result):
    """Every stages measure of one model; per-layer tensors are indexed by block."""

    model: str
    n_layers: int
    tokens: int  # next-token positions measured
    base_accuracy: float  # top-1 next-token accuracy of the unmodified model
    lesion: dict[str, torch.Tensor]  # "<mode>_<metric>" -> (n_layers,) (swap: n_layers - 1)
    lens_kl: torch.Tensor  # (n_layers,) KL(P_final || P_lens(l))
    lens_entropy: torch.Tensor  # (n_layers,)
    locality: torch.Tensor  # (n_layers, n_heads) attention mass on the previous locality_window tokens
    mlp_norm: torch.Tensor  # (n_layers,) mean |m^l| over tokens
    skew: torch.Tensor  # (n_layers, d_mlp) skewness of W_U w_out_i over the vocabulary
    kurtosis: torch.Tensor  # (n_layers, d_mlp) (Pearson; a Gaussian has 3)
    top_neurons: list[dict]  # {"class", "layer", "neuron", "skew", "kurtosis", "tokens"}
    config: StagesConfig = field(default_factory=StagesConfig)

    def counts(self, kind: str) -> torch.Tensor:
        """Prediction (kind="prediction") or suppression neurons per layer: (n_layers,)."""
        high = self.kurtosis > self.config.kurtosis_threshold
        skew = self.skew if kind == "prediction" else -self.skew
        return (high & (skew > self.config.skew_threshold)).sum(1)

    @property
    def depth(self) -> torch.Tensor:
        """Relative depth of every block, 0 (first) .. 1 (last)."""
        return torch.arange(self.n_layers) / max(1, self.n_layers - 1)


# ---- neurons ------------------------------------------------------------------------------------------------------
@torch.no_grad()
def neuron_vocab_moments(lm: LM, layer: int, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Skewness and (Pearson) kurtosis over the vocabulary of W_U w_out_i for every neuron i: two (d_mlp,)."""
    w_u, w_out = lm.W_U.float(), lm.W_out(layer).float()  # (vocab, d), (d, d_mlp)
    skews, kurts = [], []
    for i in range(0, w_out.shape[1], chunk):
        x = w_u @ w_out[:, i:i + chunk]  # (vocab, chunk)
        z = (x - x.mean(0)) / x.std(0, unbiased=False).clamp_min(1e-12)
        skews.append((z ** 3).mean(0))
        kurts.append((z ** 4).mean(0))
    return torch.cat(skews).cpu(), torch.cat(kurts).cpu()


@torch.no_grad()
def _top_neurons(lm: LM, skew: torch.Tensor, kurt: torch.Tensor, config: StagesConfig) -> list[dict]:
    out = []
    for kind, sign in (("prediction", 1.0), ("suppression", -1.0)):
        score = torch.where(sign * skew > config.skew_threshold, kurt, torch.zeros_like(kurt)).flatten()
        for flat in score.topk(config.top_neurons).indices.tolist():
            layer, neuron = divmod(flat, skew.shape[1])
            if score[flat] <= config.kurtosis_threshold:
                break
            logits = lm.W_U.float() @ lm.W_out(layer)[:, neuron].float()  # (vocab,)
            ids = (sign * logits).topk(config.top_tokens).indices.tolist()
            out.append({"class": kind, "layer": layer, "neuron": neuron, "skew": float(skew[layer, neuron]),
                        "kurtosis": float(kurt[layer, neuron]), "tokens": lm.to_str_tokens(ids)})
    return out


# ---- per-token measures -------------------------------------------------------------------------------------------
class _Sums:
    """Running sums of per-token measures (float64), divided by the token count at the end."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.n = 0

    def add(self, name: str, value: torch.Tensor) -> None:
        value = value.detach().double().cpu()
        self.sums[name] = self.sums[name] + value if name in self.sums else value

    def mean(self, name: str) -> torch.Tensor:
        return (self.sums[name] / max(1, self.n)).float()


class _Reference(NamedTuple):
    """The unmodified model's next-token distributions of one batch."""

    p: torch.Tensor  # (batch, pos - 1, vocab)
    entropy: torch.Tensor  # (batch, pos - 1)

    @classmethod
    def of(cls, logits: torch.Tensor) -> _Reference:
        p = torch.softmax(logits.float(), -1)
        return cls(p, torch.logsumexp(logits.float(), -1) - (p * logits).sum(-1))


def _compare(ref: _Reference, logits: torch.Tensor, targets: torch.Tensor, chunk: int = 32) -> tuple:
    """(sum KL(P_ref || P), correct top-1 count, sum of H(P) - H(P_ref)) over the positions given.

    From the logits directly (KL = lse - p_ref . z - H_ref, H = lse - p . z), a few positions at a time so that
    the vocabulary-sized temporaries stay in cache (2.5x faster than whole-batch tensors on CPU).
    """
    kl = entropy = torch.zeros((), dtype=torch.float64, device=logits.device)
    correct = torch.zeros((), dtype=torch.long, device=logits.device)
    for b in range(logits.shape[0]):
        for i in range(0, logits.shape[1], chunk):
            z = logits[b, i:i + chunk].float()  # (chunk, vocab)
            p_ref, h_ref = ref.p[b, i:i + chunk], ref.entropy[b, i:i + chunk]
            lse = torch.logsumexp(z, -1)
            kl = kl + (lse - (p_ref * z).sum(-1) - h_ref).sum()
            entropy = entropy + (lse - (torch.softmax(z, -1) * z).sum(-1) - h_ref).sum()
            correct = correct + (z.argmax(-1) == targets[b, i:i + chunk]).sum()
    return kl, correct, entropy


def _logits(lm: LM, ids: torch.Tensor) -> torch.Tensor:
    """Next-token logits at every position but the last: (batch, pos - 1, vocab), a view."""
    return lm.model(input_ids=ids, use_cache=False).logits[:, :-1]


def _lesion_context(lm: LM, mode: str, layer: int, resid: dict):
    below = nullcontext() if layer == 0 else start_after(lm, layer - 1, resid[layer - 1])
    return below, (delete_blocks(lm, layer) if mode == "delete" else swap_blocks(lm, layer))


def _lesions(lm: LM, ids: torch.Tensor, resid: dict, ref: _Reference, targets: torch.Tensor,
             sums: _Sums) -> None:
    """Every deletion and swap of one batch, each started from the clean stream under the lesion."""
    for mode in MODES:
        layers = range(lm.n_layers if mode == "delete" else lm.n_layers - 1)
        rows = torch.zeros(len(layers), 3, dtype=torch.float64)
        for layer in layers:
            below, lesion = _lesion_context(lm, mode, layer, resid)
            with below, lesion:
                kl, correct, d_entropy = _compare(ref, _logits(lm, ids), targets)
            rows[layer] = torch.stack([kl.double().cpu(), correct.double().cpu(), d_entropy.double().cpu()])
        sums.add(mode, rows)


@torch.no_grad()
def _batch(lm: LM, ids: torch.Tensor, config: StagesConfig, sums: _Sums) -> None:
    """All per-token measures of one batch of token ids (batch, pos)."""
    sites = lm.sites("resid_post") + lm.sites("mlp_out") + lm.sites("attn_pattern")
    with lm.hooks(*(capture(s) for s in sites)) as cache:
        ref = _Reference.of(_logits(lm, ids))
    targets = ids[:, 1:]
    resid = {layer: cache[Site(layer, "resid_post")] for layer in range(lm.n_layers)}
    sums.n += targets.numel()
    sums.add("correct", (ref.p.argmax(-1) == targets).sum())
    lens = torch.zeros(lm.n_layers, 2, dtype=torch.float64)
    for layer in range(lm.n_layers):
        kl, _, d_entropy = _compare(ref, lm.unembed(resid[layer][:, :-1]), targets)
        lens[layer] = torch.stack([kl, d_entropy + ref.entropy.sum()]).double().cpu()
    sums.add("lens", lens)
    sums.add("mlp_norm", torch.stack([cache[Site(layer, "mlp_out")][:, :-1].norm(dim=-1).sum()
                                      for layer in range(lm.n_layers)]))
    sums.add("locality", torch.stack([_local_mass(cache[Site(layer, "attn_pattern")], config.locality_window)
                                      for layer in range(lm.n_layers)]))
    _lesions(lm, ids, resid, ref, targets, sums)


def _local_mass(pattern: torch.Tensor, window: int) -> torch.Tensor:
    """Sum over the first pos - 1 queries of the attention mass on keys t-window..t-1, per head: (heads,)."""
    q = pattern.shape[-2]
    offset = torch.arange(q)[:, None] - torch.arange(pattern.shape[-1])[None]  # query - key
    local = ((offset >= 1) & (offset <= window)).to(pattern.device, pattern.dtype)
    return (pattern * local).sum(-1)[..., :-1].sum((0, 2))  # (heads,)


def stages(lm: LM, config: StagesConfig | None = None) -> StagesResult:
    """Run every stages measure on ``config.tokens`` held-out tokens of ``config.corpus`` (SPEC §3)."""
    from lmscope.data.corpus import iter_texts, token_batches

    config = config or StagesConfig()
    sums = _Sums()
    batches = token_batches(lm.tokenizer, iter_texts(config.corpus, split="test"), seq_len=config.seq_len,
                            batch_size=config.batch_size, max_tokens=config.tokens)
    n_batches = -(-config.tokens // (config.seq_len * config.batch_size))
    for ids in tqdm(batches, desc=f"stages {lm.name}", unit="batch", total=n_batches):
        _batch(lm, ids.to(lm.device), config, sums)
    moments = [neuron_vocab_moments(lm, layer)
               for layer in tqdm(range(lm.n_layers), desc=f"neurons {lm.name}", unit="layer")]
    skew, kurt = torch.stack([m[0] for m in moments]), torch.stack([m[1] for m in moments])
    base = float(sums.mean("correct"))
    lesion = {}
    for mode in MODES:
        rows = sums.mean(mode)  # (layers, 3): KL, accuracy, entropy change
        rel = rows[:, 1] / base if base > 0 else torch.full_like(rows[:, 1], float("nan"))
        lesion.update({f"{mode}_kl": rows[:, 0], f"{mode}_rel_acc": rel,
                       f"{mode}_d_entropy": rows[:, 2]})
    lens = sums.mean("lens")
    return StagesResult(
        model=lm.name, n_layers=lm.n_layers, tokens=sums.n, base_accuracy=base, lesion=lesion,
        lens_kl=lens[:, 0], lens_entropy=lens[:, 1], locality=sums.mean("locality"), mlp_norm=sums.mean("mlp_norm"),
        skew=skew, kurtosis=kurt, top_neurons=_top_neurons(lm, skew, kurt, config), config=config)
