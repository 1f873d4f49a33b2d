"""This machine's own matmul peak (fp32 and bf16, at the current thread count) and the `auto` dtype.

`measure_peak` times `F.linear` (x @ W^T, the layout every nn.Linear runs; on a CPU without bf16 units a
bf16 `a @ b` with a row-major b measured 15x slower than this) over a few shapes per dtype, the median of
the timed calls per shape, and reports the best shape's FLOP/s as the peak: the denominator of the model
FLOP/s utilisation (MFU) every bench report states.

`auto_dtype` decides from what the device *has*, never from a timing, so the same command on the same
machine runs the same code whatever the load: bf16 on a CUDA GPU with native bf16 (compute capability
>= 8.0) and on a CPU with bf16 matrix units (AMX-BF16 or AVX512-BF16); fp32 elsewhere (AVX2-only CPUs
emulate bf16 several times slower than fp32).
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
        {**hardware(device), "torch", "auto_dtype", "dtypes": {name: {"peak_flops_per_s", "per_shape":
        [{"shape", "flops_per_s"}]}}, "bf16_over_fp32" (when both were measured)}.
    """
    device = torch.device(device)
    out: dict[str, Any] = {**hardware(device), "torch": torch.__version__}
    out["auto_dtype"] = dtype_name(auto_dtype(device))
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
    return f"{device.type} ({cpu_model()}, {os.cpu_count()} cores)"


# CPU features that execute bf16 matmuls natively (Linux /proc/cpuinfo flag names)
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (Linux /proc/cpuinfo; torch's own probes elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            line = next((ln for ln in f if ln.startswith("flags")), "")
        if line:
            return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    probes = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}
    return frozenset(flag for flag, fn in probes.items() if getattr(torch.cpu, fn, lambda: False)())


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (what `lscpu` prints), or the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as f:
            line = next((ln for ln in f if ln.startswith("model name")), "")
        if line:
            return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bf16_units(device: torch.device | str = "cpu") -> str | None:
    """The hardware that runs bf16 matmuls natively on `device`: "amx_bf16" / "avx512_bf16" on CPU,
    "sm_XY" on CUDA (compute capability >= 8.0), or None where bf16 would be emulated."""
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"sm_{major}{minor}" if major >= 8 else None
    if device.type == "cpu":
        return next((f for f in BF16_CPU_FLAGS if f in cpu_flags()), None)
    return None


def bf16_is_fast(device: torch.device | str = "cpu") -> bool:
    """Whether `device` has native bf16 matmul units (see `bf16_units`); deterministic, no timing."""
    return bf16_units(device) is not None


def auto_dtype(device: torch.device | str = "cpu") -> torch.dtype:
    """The dtype `auto` means on `device`: bf16 where it has bf16 units, else fp32."""
    return torch.bfloat16 if bf16_is_fast(device) else torch.float32


def hardware(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What a report needs to say about the machine: device, CPU model, threads, bf16 units, load."""
    device = torch.device(device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "device": device_name(device),
        "cpu_model": cpu_model(),
        "threads": torch.get_num_threads(),
        "bf16_units": bf16_units(device),
        "load_avg_1min": load,
    }


def resolve_dtype(name: str, device: torch.device | str = "cpu") -> torch.dtype:
    """ "auto" -> `auto_dtype(device)`; "bf16" / "fp32" as given."""
    if name == "auto":
        return auto_dtype(device)
    if name not in DTYPES:
        raise ValueError(f"dtype must be auto, bf16 or fp32, got {name!r}")
    return DTYPES[name]
