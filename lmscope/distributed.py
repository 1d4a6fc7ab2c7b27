"""Several processes (``torchrun``): which rank this is, and the few collectives the methods need.

SAE training: each rank harvests its own shard of the corpus and trains on it; gradients are averaged over the
ranks after every backward pass, as DistributedDataParallel does, so every rank holds the same weights. Dataset
runs (trace-dataset, eval-edits): each rank takes every W-th record and writes its own resumable records; rank 0
merges them in the data's order, so the result equals a single-process run. Backend: gloo on CPU, nccl on GPU.
Rank 0 alone writes shared files (checkpoints, results, the store).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from lmscope.errors import LmscopeError

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """The rank of this process among ``size`` processes (size 1: no collectives at all)."""

    rank: int = 0
    size: int = 1

    @classmethod
    def from_env(cls, device: str | torch.device = "cpu") -> World:
        """The world torchrun set up (WORLD_SIZE, RANK), initialising the process group once; else a single rank."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if torch.device(device).type == "cuda" else "gloo")
            atexit.register(_close)  # a process group left open aborts the interpreter at exit
        return cls(dist.get_rank(), dist.get_world_size())

    @property
    def main(self) -> bool:
        """Whether this is rank 0, which writes files."""
        return self.rank == 0

    def min(self, value: int) -> int:
        """The smallest ``value`` over the ranks (how many batches every rank can take from a buffer)."""
        if self.size == 1:
            return value
        t = torch.tensor([value])
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t)

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any rank."""
        if self.size == 1:
            return flag
        t = torch.tensor([int(flag)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """The rows of every rank's ``x`` (same shape on every rank), in rank order."""
        if self.size == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    def fired(self, mask: torch.Tensor) -> torch.Tensor:
        """Latents that fired on any rank: (d_sae,) bool."""
        if self.size == 1:
            return mask
        t = mask.to(torch.uint8)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.bool()

    def average_gradients(self, params) -> None:
        """Replace every gradient by its mean over the ranks (what DistributedDataParallel does)."""
        if self.size == 1:
            return
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= self.size

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.size > 1:
            dist.barrier()

    def on_main(self, fn: Callable[[], T]) -> T | None:
        """Run ``fn`` on rank 0 only; a user error there is raised on every rank (no rank is left waiting)."""
        result, error = None, None
        if self.main:
            try:
                result = fn()
            except LmscopeError as err:
                error = err
        if self.size > 1:
            box = [error]
            dist.broadcast_object_list(box, src=0)
            error = box[0]
            dist.barrier()
        if error is not None:
            raise error
        return result


def _close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
