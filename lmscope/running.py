"""Running statistics over streams of activations, exact in float64, with state that checkpoints and merges.

Each statistic keeps sums, not means, so a checkpointed run that resumes gives the same numbers as an
uninterrupted one, and partial results from several workers merge by adding. ``state()`` is a dict of tensors
(it saves as safetensors); ``from_state`` rebuilds the statistic.
"""

from __future__ import annotations

import torch


class Mean:
    """Running mean of vectors: ``update(x)`` with x (n, *shape)."""

    def __init__(self, shape: tuple[int, ...] = ()):
        self.total = torch.zeros(shape, dtype=torch.float64)
        self.count = 0

    def update(self, x: torch.Tensor) -> None:
        """Add the rows of ``x``: (n, *shape)."""
        self.total += x.detach().double().sum(0).cpu()
        self.count += x.shape[0]

    def merge(self, other: Mean) -> None:
        """Add another partial statistic of the same shape."""
        self.total += other.total
        self.count += other.count

    def mean(self) -> torch.Tensor:
        """The mean so far (float32); NaN before any update."""
        return (self.total / self.count).float() if self.count else torch.full_like(self.total, float("nan")).float()

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors that rebuild this statistic."""
        return {"total": self.total, "count": torch.tensor(self.count, dtype=torch.int64)}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]):
        """Rebuild from :meth:`state`."""
        stat = cls.__new__(cls)
        stat.total, stat.count = state["total"].double(), int(state["count"])
        return stat


class SecondMomentSum(Mean):
    """Running E[x x^T] of vectors x (d,): ``update(x)`` with x (n, d); the sum stays in float64."""

    def __init__(self, dim: int):
        super().__init__((dim, dim))

    def update(self, x: torch.Tensor) -> None:
        """Add x^T x of the rows of ``x``: (n, d)."""
        x = x.detach().float()
        self.total += (x.T @ x).double().cpu()
        self.count += x.shape[0]
