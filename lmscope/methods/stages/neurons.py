"""Prediction and suppression neurons (Gurnee et al.): moments of W_U w_out over the vocabulary."""

from __future__ import annotations

import torch

from lmscope.methods.stages.config import StagesConfig
from lmscope.model.lm import LM


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
def top_neurons(lm: LM, skew: torch.Tensor, kurt: torch.Tensor, config: StagesConfig) -> list[dict]:
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
