"""Process-level CPU settings argen applies before running a command.

Large temporaries and glibc: an allocation above malloc's mmap threshold (at most 32 MB) gets fresh pages from
the kernel, and freeing it returns them, so a tensor of that size allocated in every sampling step pays page
faults (zero-filling) on every touch. On this project's 2-core AVX2 EPYC a 78 MB gather took 388 ms that way
and 62 ms once freed memory was kept; ActVAR sampling at VAR-d16 size went from 19.6 s to 15.7 s per image
(dense VAR: 21.5 s and 21.9 s, its tensors being smaller) - see
`python -m benchmarks actvar_speed` and the README.
"""

from __future__ import annotations

import ctypes
import os
import platform

_MALLINFO2_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks")
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
ENV_OPT_OUT = "ARGEN_SYSTEM_MALLOC"


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (no mmap for large blocks, no trimming of the heap).

    Faster CPU runs that allocate the same large tensors step after step (sampling), at the cost of a
    resident size that stays at its peak. Not for jobs whose arrays keep growing: without mmap every larger
    array is carved from the top of the heap and the holes left behind may never fit again (a tokenize run
    reached 18 GB this way), so the CLI applies it to its sampling commands only. A no-op (returns False)
    off Linux/glibc or when the environment sets ARGEN_SYSTEM_MALLOC=1. Applies to allocations made after
    the call.

    Returns:
        True when both settings were applied.
    """
    if os.environ.get(ENV_OPT_OUT) == "1" or platform.system() != "Linux" or not platform.libc_ver()[0]:
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (*_MALLINFO2_FIELDS, "fordblks", "keepcost")]


def heap_in_use() -> int | None:
    """Bytes glibc's malloc has handed out and not taken back (all arenas and mmapped blocks), or None where
    that is not available (glibc < 2.33, other libcs).

    Unlike the resident size it falls when memory is freed even while `keep_freed_memory` keeps the pages,
    so benchmarks read peak memory from it.
    """
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)
