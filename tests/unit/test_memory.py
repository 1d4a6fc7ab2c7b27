"""lmscope.memory: freed large blocks are reused instead of page-faulted anew (each case in a fresh process, as
glibc's thresholds are set once per process)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# the library is imported first, as in a training run (the command, the model and the methods are loaded before the
# first step): with torch alone, glibc's heap can hold a live small block above each freed tensor and grow instead
PROBE = """
import resource, sys, torch
import lmscope.model
from lmscope.io import known_kinds
known_kinds()
from lmscope.memory import keep_freed_memory
applied = keep_freed_memory()
x = torch.ones(4096, 4608); del x  # 75 MB, above glibc's largest default mmap threshold (32 MiB)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    x = torch.ones(4096, 4608); del x
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(env_value: str) -> tuple[bool, int]:
    """(whether the setting applied, minor page faults of five 75 MB allocations) in a fresh interpreter."""
    env = {"LMSCOPE_MALLOC": env_value, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout
    applied, faults = out.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting exists only under glibc")
def test_kept_blocks_are_reused_without_page_faults():
    kept_applied, kept = _faults("")
    system_applied, system = _faults("system")
    assert kept_applied and not system_applied
    pages = 4096 * 4608 * 4 // 4096  # one tensor's pages
    assert system > 4 * pages  # glibc's default: every allocation maps (and faults) fresh pages
    assert kept < 2 * pages  # kept: at most the first one faults
