"""Explain one unit, score the explanation three ways, and say how the scores were reached.

The explainer reads the explain excerpts either as Bills et al.'s token<TAB>value lines (a completion model), values
discretised to 0 .. max_value against the unit's largest activation there, or (a chat model) as text whose
activating tokens are marked << >> (each excerpt's tokens at or above ``mark`` times its own peak), with the marked
tokens counted. Three scores (Bills et al. 2023; Paulo et al. 2024):

- simulation: the Pearson correlation between simulated and true activations over every token of the scoring
  excerpts together (top, quantile and random: Bills et al.'s "top-and-random" score);
- detection: does the unit fire somewhere in this excerpt? AUROC and balanced accuracy (P(yes) > 0.5) of the
  activating excerpts (top and quantile) against random ones;
- fuzzing: are the marked tokens what the explanation describes? Each activating excerpt is shown twice, once with
  its activating tokens marked and once with as many other tokens marked at random; AUROC and balanced accuracy.

A score that cannot be computed (a constant simulation, no readable answer) is None, never NaN; a non-finite
activation or simulated value is an :class:`ArtifactError` naming the unit (the model, SAE or simulator gives NaN or
infinity: its weights or dtype), not a score.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from contextlib import contextmanager

import torch

from lmscope.errors import ArtifactError
from lmscope.methods.autointerp.backends import load_prompt, show

MAX_MARKED = 10  # marked tokens listed to the chat explainer


def discretise(values: torch.Tensor, top: float, max_value: int) -> list[int]:
    """Activations as integers 0 .. max_value (negative -> 0) against the unit's largest activation ``top``."""
    scaled = (values.float().clamp_min(0) / max(top, 1e-12) * max_value).round().clamp(0, max_value)
    return [int(v) for v in scaled]


def marks(values: torch.Tensor, mark: float) -> torch.Tensor:
    """The activating tokens of one excerpt (seq,): at or above ``mark`` times its peak, and positive (bool)."""
    peak = float(values.max()) if values.numel() else 0.0
    return (values > 0) & (values >= mark * peak) if peak > 0 else torch.zeros_like(values, dtype=torch.bool)


def marked_text(tokens: list[str], where: torch.Tensor) -> str:
    """The excerpt with each run of marked tokens between << and >> (a run's leading space kept outside)."""
    out, run = [], []
    for token, on in zip(tokens, where.tolist()):
        if on:
            run.append(token)
            continue
        if run:
            out.append(_bracket("".join(run)))
            run = []
        out.append(token)
    if run:
        out.append(_bracket("".join(run)))
    return "".join(out)


def _bracket(text: str) -> str:
    stripped = text.lstrip()
    return f"{text[:len(text) - len(stripped)]}<<{stripped}>>"


def _chat_explainer_prompt(tokens: list[list[str]], values: list[torch.Tensor], max_value: int, mark: float,
                           folder: str) -> str:
    examples, counts = [], Counter()
    for i, (toks, vals) in enumerate(zip(tokens, values), 1):
        where = marks(vals, mark)
        examples.append(f"Excerpt {i}: {show(marked_text(toks, where))}")
        counts.update(show(t.strip()) or show(t) for t, on in zip(toks, where.tolist()) if on)
    top = ", ".join(f'"{t}" ({n})' for t, n in counts.most_common(MAX_MARKED))
    return load_prompt("explainer_chat.txt", folder).format(max_value=max_value, examples="\n".join(examples),
                                                            top_tokens=top)


def explainer_prompt(tokens: list[list[str]], values: list[torch.Tensor], max_value: int, folder: str = "",
                     chat: bool = False, mark: float = 0.25) -> str:
    """The explainer's prompt for excerpts (tokens, activations).

    Marked text for a ``chat`` explainer, else Bills et al.'s token<TAB>value lines, all at one scale.
    """
    if chat:
        return _chat_explainer_prompt(tokens, values, max_value, mark, folder)
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


def balanced_accuracy(positive: list[float], negative: list[float], threshold: float = 0.5) -> float:
    """Mean of the true-positive and true-negative rates; a probability above ``threshold`` reads as yes.

    NaN without both positives and negatives.
    """
    if not positive or not negative:
        return float("nan")
    return (sum(p > threshold for p in positive) / len(positive)
            + sum(n <= threshold for n in negative) / len(negative)) / 2


def _finite(values, unit: str, what: str) -> None:
    """Every value is a finite number, else an :class:`ArtifactError` naming ``unit`` and ``what`` the value is."""
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    bad = values[~torch.isfinite(values)]
    if bad.numel():
        raise ArtifactError(f"unit {unit}: {what} is not finite ({float(bad[0])}), so it cannot be scored; the model, "
                            "SAE or simulator gives NaN or infinity (check its weights, or run in float32)")


def _decoys(where: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """As many marks as ``where`` has, on tokens it does not mark, chosen at random (fewer when there are fewer)."""
    free = (~where).nonzero().flatten()
    pick = free[torch.randperm(free.numel(), generator=gen)[: int(where.sum())]]
    return torch.zeros_like(where).index_fill_(0, pick, True)


def _simulation(simulator, explanation: str, scoring: list, unit: str) -> tuple[float, int]:
    simulated = simulator.simulate_many(explanation, [t for t, _ in scoring])
    simulated = [p if p is not None and len(p) == len(ex[1]) else None for p, ex in zip(simulated, scoring)]
    true, sim = [], []
    for (_, values), pred in zip(scoring, simulated):
        if pred is not None:
            _finite(pred, unit, "a simulated activation")
            true += values.float().tolist()
            sim += pred
    return correlation(true, sim), sum(p is None for p in simulated)


def _classify(probs: list[float | None], n_positive: int, unit: str, what: str) -> tuple[float, float, int]:
    """(AUROC, balanced accuracy, unreadable answers) of answers whose first ``n_positive`` are the positives."""
    _finite([p for p in probs if p is not None], unit, what)
    pos = [p for p in probs[:n_positive] if p is not None]
    neg = [p for p in probs[n_positive:] if p is not None]
    return auroc(pos, neg), balanced_accuracy(pos, neg), sum(p is None for p in probs)


@contextmanager
def _timed(seconds: dict, stage: str):
    """Add the wall time of the block to ``seconds[stage]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] = round(seconds.get(stage, 0.0) + time.perf_counter() - start, 3)


def score_unit(explainer, simulator, excerpts: dict, cfg, unit: str = "?", seed: int = 0) -> dict:
    """Explanation, its three scores, the count of unreadable answers and each stage's seconds of one unit.

    ``excerpts``: {"explain": [(tokens, values)], "top": [...], "random": [...]}, values as (seq,) tensors; "top"
    holds every activating scoring excerpt (the top and quantile ones). ``cfg``: a :class:`ScoreConfig`; ``seed``
    draws the fuzzing decoys; ``unit`` names the unit in errors. A non-finite activation, simulated value or
    probability is an :class:`ArtifactError` naming ``unit``. ``seconds``: wall time of explain and of each scorer.
    """
    explain, top, rand = excerpts["explain"], excerpts["top"], excerpts["random"]
    for _, values in explain + top + rand:
        _finite(values, unit, "an activation")
    prompt = explainer_prompt([t for t, _ in explain], [v for _, v in explain], explainer.max_value, cfg.prompts,
                              getattr(explainer, "chat", False), cfg.mark)
    seconds: dict[str, float] = {}
    with _timed(seconds, "explain"):
        explanation = explainer.explain(prompt)
    record: dict = {"explanation": explanation, "score": None, "malformed": 0, "scored_excerpts": len(top + rand),
                    "seconds": seconds}
    if cfg.simulation:
        with _timed(seconds, "simulation"):
            r, bad = _simulation(simulator, explanation, top + rand, unit)
        record.update(score=None if math.isnan(r) else r, malformed=bad)
    if cfg.detection:
        with _timed(seconds, "detection"):
            probs = simulator.detect_many(explanation, ["".join(t) for t, _ in top + rand])
        _put(record, "detection", _classify(probs, len(top), unit, "a detection probability"))
    if cfg.fuzzing and top:
        gen = torch.Generator().manual_seed(seed)
        where = [marks(v, cfg.mark) for _, v in top]
        texts = [marked_text(t, w) for (t, _), w in zip(top, where)]
        texts += [marked_text(t, _decoys(w, gen)) for (t, _), w in zip(top, where)]
        with _timed(seconds, "fuzzing"):
            probs = simulator.fuzz_many(explanation, texts)
        _put(record, "fuzzing", _classify(probs, len(top), unit, "a fuzzing probability"))
    return record


def _put(record: dict, name: str, scores: tuple[float, float, int]) -> None:
    auc, accuracy, bad = scores
    record[name] = None if math.isnan(auc) else auc
    record[f"{name}_accuracy"] = None if math.isnan(accuracy) else accuracy
    record["malformed"] += bad
