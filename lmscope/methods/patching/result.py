"""The result of a patching sweep: one normalised score per (layer, position) or (layer, head) and kind."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmscope.io import Result
from lmscope.methods.patching.config import PatchConfig


@dataclass
class PatchingResult(Result):
    """Scores of patching clean activations into the corrupted run (``method``: "exact" or "attribution").

    ``scores[kind]``: (n_layers, pos) for the stream kinds, (n_layers, n_heads) for "heads"; 0 = the corrupted run's
    metric, 1 = the clean run's. Cells not patched (layers / positions left out) are NaN.
    """

    model: str
    clean: str
    corrupted: str
    tokens: list[str]  # (pos,) the corrupted prompt's tokens
    clean_tokens: list[str]  # (pos,)
    clean_metric: float
    corrupted_metric: float
    scores: dict[str, torch.Tensor]
    method: str = "exact"
    config: PatchConfig = field(default_factory=PatchConfig)

    def summary(self) -> dict:
        """The metric on both runs and the strongest cell of each kind."""
        best = {}
        for kind, s in self.scores.items():
            flat = torch.nan_to_num(s, nan=float("-inf")).flatten()
            i = int(flat.argmax())
            layer, col = divmod(i, s.shape[1])
            where = {"head": col} if kind == "heads" else {"position": col, "token": self.tokens[col]}
            best[kind] = {"layer": layer, **where, "score": float(s[layer, col])}
        return {"model": self.model, "method": self.method, "clean": self.clean, "corrupted": self.corrupted,
                "clean_metric": self.clean_metric, "corrupted_metric": self.corrupted_metric, "best": best}

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        """(m - m_corrupted) / (m_clean - m_corrupted)."""
        gap = self.clean_metric - self.corrupted_metric
        return (raw - self.corrupted_metric) / (gap if abs(gap) > 1e-12 else 1e-12)
