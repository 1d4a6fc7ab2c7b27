"""Explain one unit, simulate it on held-out excerpts, and score the explanation.

The explainer reads the explain excerpts as token<TAB>value lines, values discretised to 0 .. max_value against the
unit's largest activation there. The simulation score is the Pearson correlation between simulated and true
activations over every token of the scoring excerpts together (top and random: Bills et al.'s "top-and-random"
score). The detection score is the AUROC of the detector's P(yes) for top excerpts against random ones.

A score that cannot be computed (a constant simulation, no readable answer) is None, never NaN; a non-finite
activation or simulated value is an :class:`ArtifactError` naming the unit (the model, SAE or simulator gives NaN or
infinity: its weights or dtype), not a score.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import torch

from lmscope.errors import ArtifactError
from lmscope.methods.autointerp.backends import load_prompt, show


def discretise(values: torch.Tensor, top: float, max_value: int) -> list[int]:
    """Activations as integers 0 .. max_value (negative -> 0) against the unit's largest activation ``top``."""
    scaled = (values.float().clamp_min(0) / max(top, 1e-12) * max_value).round().clamp(0, max_value)
    return [int(v) for v in scaled]


def explainer_prompt(tokens: list[list[str]], values: list[torch.Tensor], max_value: int, folder: str = "") -> str:
    """The explainer's prompt for excerpts (tokens, activations), all at one scale."""
    top = max(float(v.max()) for v in values)
    blocks, nonzero = [], []
    for toks, vals in zip(tokens, values):
        levels = discretise(vals, top, max_value)
        blocks.append("<start>\n" + "\n".join(f"{show(t)}\t{v}" for t, v in zip(toks, levels)) + "\n<end>")
        nonzero.append("<start>\n" + "\n".join(f"{show(t)}\t{v}" for t, v in zip(toks, levels) if v) + "\n<end>")
    return load_prompt("explainer.txt", folder).format(max_value=max_value, examples="\n".join(blocks),
                                                       nonzero="\n".join(nonzero))


def correlation(a: list[float], b: list[float]) -> float:
    """Pearson correlation (NaN when either side is constant)."""
    x, y = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    if x.numel() < 2 or float(x.std()) == 0 or float(y.std()) == 0:
        return float("nan")
    return float(torch.corrcoef(torch.stack([x, y]))[0, 1])


def auroc(positive: list[float], negative: list[float]) -> float:
    """P(a positive scores above a negative), ties half (NaN without both)."""
    if not positive or not negative:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return wins / (len(positive) * len(negative))


def _parallel(fn, items: list, workers: int) -> list:
    if workers <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def _finite(values, unit: str, what: str) -> None:
    """Every value is a finite number, else an :class:`ArtifactError` naming ``unit`` and ``what`` the value is."""
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    bad = values[~torch.isfinite(values)]
    if bad.numel():
        raise ArtifactError(f"unit {unit}: {what} is not finite ({float(bad[0])}), so it cannot be scored; the model, "
                            "SAE or simulator gives NaN or infinity (check its weights, or run in float32)")


def score_unit(explainer, simulator, excerpts: dict, cfg, workers: int = 1, unit: str = "?") -> dict:
    """Explanation, simulation score, detection score and malformed-answer count of one unit (named ``unit``).

    ``excerpts``: {"explain": [(tokens, values)], "top": [...], "random": [...]}, values as (seq,) tensors. A
    non-finite activation, simulated value or detection probability is an :class:`ArtifactError` naming ``unit``.
    """
    explain = excerpts["explain"]
    for _, values in explain + excerpts["top"] + excerpts["random"]:
        _finite(values, unit, "an activation")
    prompt = explainer_prompt([t for t, _ in explain], [v for _, v in explain], explainer.max_value, cfg.prompts)
    explanation = explainer.explain(prompt)
    scoring = excerpts["top"] + excerpts["random"]
    simulated = _parallel(lambda ex: simulator.simulate(explanation, ex[0]), scoring, workers)
    true, sim = [], []
    simulated = [p if p is None or len(p) == len(ex[1]) else None for p, ex in zip(simulated, scoring)]  # one a token
    for (_, values), pred in zip(scoring, simulated):
        if pred is not None:
            _finite(pred, unit, "a simulated activation")
            true += values.float().tolist()
            sim += pred
    record = {"explanation": explanation, "score": correlation(true, sim),
              "malformed": sum(p is None for p in simulated), "scored_excerpts": len(scoring)}
    if cfg.detection:
        texts = ["".join(t) for t, _ in scoring]
        probs = _parallel(lambda text: simulator.detect(explanation, text), texts, workers)
        _finite([p for p in probs if p is not None], unit, "a detection probability")
        n_top = len(excerpts["top"])
        record["detection"] = auroc([p for p in probs[:n_top] if p is not None],
                                    [p for p in probs[n_top:] if p is not None])
        record["malformed"] += sum(p is None for p in probs)
    record["score"] = None if math.isnan(record["score"]) else record["score"]
    if "detection" in record and math.isnan(record["detection"]):
        record["detection"] = None
    return record
