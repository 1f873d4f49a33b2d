"""argen.runtime: the CLI keeps freed memory for reuse on glibc, unless the environment opts out."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from argen.runtime import ENV_OPT_OUT, heap_in_use, keep_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_opt_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_OPT_OUT, "1")
    assert keep_freed_memory() is False


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_large_tensors_reuse_memory_after_the_call() -> None:
    # In a fresh process: after the call, a freed 64 MB block is reused, so the resident size does not
    # drop back after `del` (with glibc's defaults it is unmapped and the resident size falls by ~64 MB).
    code = """
import resource, torch
from argen.runtime import keep_freed_memory
def rss_mb():
    return int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize() / 2**20
assert keep_freed_memory()
x = torch.ones(16 * 2**20)
before = rss_mb()
del x
print(before - rss_mb())
"""
    dropped = float(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert dropped < 8, f"freed memory went back to the OS ({dropped:.0f} MB)"


@pytest.mark.skipif(not GLIBC, reason="mallinfo2 is glibc's")
def test_heap_in_use_follows_live_tensors_while_memory_is_kept() -> None:
    import torch

    keep_freed_memory()
    base = heap_in_use()
    x = torch.ones(64 << 20, dtype=torch.uint8)
    grown = heap_in_use() - base
    del x
    assert grown >= 63 << 20 and heap_in_use() - base < 8 << 20
