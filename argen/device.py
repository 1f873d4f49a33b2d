"""This machine's own matmul peak (fp32 and bf16, at the current thread count) and bf16 detection.

`measure_peak` times `F.linear` (x @ W^T, the layout every nn.Linear runs; on a CPU without bf16 units a
bf16 `a @ b` with a row-major b measured 15x slower than this) over a few shapes per dtype, the median of
the timed calls per shape, and reports the best shape's FLOP/s as the peak: the denominator of the model
FLOP/s utilisation (MFU) every bench report states. `bf16_is_fast` decides whether bf16 is worth using on
a device: on CUDA the GPU must have native bf16 (compute capability >= 8.0); on CPU oneDNN must report bf16
support *and* a short timed probe must show bf16 matmuls beating fp32 (CPUs without AVX512-BF16/AMX
emulate bf16, far slower than fp32).
"""

from __future__ import annotations

import functools
import os
import platform
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# (m, k, n): squares plus the shape of a 384-wide transformer's MLP over 4096 tokens
SHAPES: tuple[tuple[int, int, int], ...] = (
    (256, 256, 256),
    (512, 512, 512),
    (1024, 1024, 1024),
    (4096, 384, 1536),
)
PROBE_SHAPE = (512, 512, 512)
BF16_MIN_SPEEDUP = 1.2  # bf16 must beat fp32 matmuls by this factor to be chosen by "auto"


def dtype_name(dtype: torch.dtype) -> str:
    """torch dtype -> "fp32" / "bf16" (the names the CLI and reports use)."""
    return next((k for k, v in DTYPES.items() if v == dtype), str(dtype).removeprefix("torch."))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops_per_s(
    shape: tuple[int, int, int],
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    repeats: int = 5,
    budget_s: float = 2.0,
) -> float:
    """Median FLOP/s of `F.linear((m, k), (n, k))` in `dtype` over `repeats` timed calls after a warm-up.

    Stops early once `budget_s` seconds were spent timing (at least one timed call), so a dtype the device
    emulates slowly does not stall the measurement.
    """
    device = torch.device(device)
    m, k, n = shape
    x_MK = torch.randn(m, k, device=device).to(dtype)
    w_NK = torch.randn(n, k, device=device).to(dtype)
    F.linear(x_MK, w_NK)
    times: list[float] = []
    while len(times) < repeats and (not times or sum(times) < budget_s):
        _sync(device)
        t0 = time.perf_counter()
        F.linear(x_MK, w_NK)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * m * k * n / statistics.median(times)


def measure_peak(
    device: torch.device | str = "cpu",
    dtypes: Sequence[str] = ("fp32", "bf16"),
    shapes: Sequence[tuple[int, int, int]] = SHAPES,
    repeats: int = 5,
) -> dict[str, Any]:
    """Peak matmul FLOP/s per dtype on `device` at the current torch thread count.

    Returns:
        {"device", "torch", "threads", "dtypes": {name: {"peak_flops_per_s", "per_shape": [{"shape",
        "flops_per_s"}]}}, "bf16_over_fp32" (when both were measured)}.
    """
    device = torch.device(device)
    out: dict[str, Any] = {"device": device_name(device), "torch": torch.__version__}
    out["threads"] = torch.get_num_threads()
    out["dtypes"] = {}
    for name in dtypes:
        if name not in DTYPES:
            raise ValueError(f"unknown dtype {name!r}: choose from {sorted(DTYPES)}")
        rows = [
            {"shape": list(s), "flops_per_s": matmul_flops_per_s(s, DTYPES[name], device, repeats)}
            for s in shapes
        ]
        out["dtypes"][name] = {"peak_flops_per_s": max(r["flops_per_s"] for r in rows), "per_shape": rows}
    if {"fp32", "bf16"} <= set(out["dtypes"]):
        ratio = out["dtypes"]["bf16"]["peak_flops_per_s"] / out["dtypes"]["fp32"]["peak_flops_per_s"]
        out["bf16_over_fp32"] = ratio
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


@functools.cache
def _bf16_is_fast(device_type: str, index: int | None, threads: int) -> bool:
    if device_type == "cuda":
        return torch.cuda.get_device_capability(index)[0] >= 8
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    fp32 = matmul_flops_per_s(PROBE_SHAPE, torch.float32, "cpu", repeats=3, budget_s=0.2)
    bf16 = matmul_flops_per_s(PROBE_SHAPE, torch.bfloat16, "cpu", repeats=3, budget_s=0.2)
    return bf16 >= BF16_MIN_SPEEDUP * fp32


def bf16_is_fast(device: torch.device | str = "cpu") -> bool:
    """Whether `device` has bf16 matrix support that beats fp32 (detected and probed once per process and
    thread count, ~0.1 s on CPU)."""
    device = torch.device(device)
    return _bf16_is_fast(device.type, device.index, torch.get_num_threads())


def resolve_dtype(name: str, device: torch.device | str = "cpu") -> torch.dtype:
    """ "auto" -> bf16 where `bf16_is_fast(device)`, else fp32; "bf16" / "fp32" as given."""
    if name == "auto":
        return torch.bfloat16 if bf16_is_fast(device) else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype must be auto, bf16 or fp32, got {name!r}")
    return DTYPES[name]
