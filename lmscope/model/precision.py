"""Whether bfloat16 is fast on a device, measured once per process.

bfloat16 halves a model's memory and, on a GPU or a CPU with native bfloat16 (AVX512-BF16, AMX, ARM's BF16), speeds
its matmuls up. A CPU without it (AVX2 only: most AMD Zen 1-3 and pre-2020 Intel parts) emulates them: on this
project's 2-core AMD EPYC (AVX2) a 1024 x 1024 bfloat16 matmul took 69x as long as in float32 and the bundled models'
forward passes ~5x (bench/results/precision-cpu.md). The options that use bfloat16 for speed (autocast, an
explainer's weights) ask :func:`bfloat16_is_fast` first; an explicit ``--dtype bfloat16`` is kept (it may be there for
the memory) with one warning.
"""

from __future__ import annotations

import functools
import logging
import platform
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)
SLOWER = 2.0  # bfloat16 is "slow" when its matmul takes this many times as long as float32's
SIDE = 128  # the probe's matrices: large enough to hit the real kernels, a few milliseconds when emulated


def _time(a: torch.Tensor, b: torch.Tensor) -> float:
    start = time.perf_counter()
    a @ b
    return time.perf_counter() - start


def _cpu_slowdown(reps: int = 5) -> float:
    """bfloat16 / float32 time of one matmul, the best of ``reps`` alternated timings each.

    On one thread: threads that other processes keep busy would only add noise.
    """
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(SIDE, SIDE, generator=gen), torch.randn(SIDE, SIDE, generator=gen)
    a16, b16 = a.bfloat16(), b.bfloat16()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _time(a, b), _time(a16, b16)  # warm-up
        fp32, bf16 = float("inf"), float("inf")
        for _ in range(reps):
            fp32, bf16 = min(fp32, _time(a, b)), min(bf16, _time(a16, b16))
    finally:
        torch.set_num_threads(threads)
    return bf16 / max(fp32, 1e-9)


@functools.cache
def bfloat16_slowdown(device_type: str = "cpu") -> float:
    """How many times longer a bfloat16 matmul takes than a float32 one on this machine's ``device_type``.

    CPU: measured once per process (a 128 x 128 matmul on one thread, best of five). CUDA: 1.0 where the GPU supports
    bfloat16, infinity where it does not. Other devices: 1.0 (not measured).
    """
    if device_type == "cuda":
        return 1.0 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else float("inf")
    if device_type != "cpu":
        return 1.0
    return _cpu_slowdown()


def bfloat16_is_fast(device: str | torch.device = "cpu") -> bool:
    """True where bfloat16 matmuls are no more than :data:`SLOWER` times as slow as float32 ones."""
    return bfloat16_slowdown(torch.device(device).type) <= SLOWER


def fast_autocast(on: bool, device: str | torch.device, what: str) -> bool:
    """``on``, unless bfloat16 is slow on ``device``: then False, and one warning naming ``what`` and the factor."""
    if on and not bfloat16_is_fast(device):
        log.warning("%s: bfloat16 autocast left off: bfloat16 matmuls take %.0fx as long as float32 ones on this "
                    "%s (no native bfloat16), so float32 is faster", what, bfloat16_slowdown(torch.device(device).type),
                    torch.device(device).type.upper())
        return False
    return on


def speed_dtype(device: str | torch.device) -> str:
    """The dtype an option that wants bfloat16 for speed and memory should use: bfloat16 where fast, else float32."""
    return "bfloat16" if bfloat16_is_fast(device) else "float32"


def warn_if_slow(dtype: torch.dtype, device: str | torch.device) -> None:
    """One warning when a model is loaded in bfloat16 on a device where that is slow (the choice is kept)."""
    if dtype == torch.bfloat16 and not bfloat16_is_fast(device):
        log.warning("bfloat16 matmuls take %.0fx as long as float32 ones on this %s (no native bfloat16): the model "
                    "loads in bfloat16 as asked (half the memory), but --dtype float32 runs faster here",
                    bfloat16_slowdown(torch.device(device).type), torch.device(device).type.upper())


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def machine(device: str | torch.device = "cpu") -> str:
    """The hardware a computation on ``device`` runs on, in words (the CPU's name and threads, or the GPU's name)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    if device.type != "cpu":
        return device.type
    fast = "native bfloat16" if bfloat16_is_fast("cpu") else "no native bfloat16"
    threads = torch.get_num_threads()
    return f"{cpu_name()} ({fast}), {threads} thread{'s' if threads > 1 else ''}"
