"""Sampler benchmarks: throughput (img/s), latency at batch 1 and peak memory, as JSON.

Timing: `warmup` untimed calls, then `repeats` timed calls per batch size; the median is reported. On GPU
each call is timed with CUDA events after a synchronize and peak memory is `torch.cuda.max_memory_allocated`;
on CPU wall-clock `perf_counter` is used and peak memory is the largest resident-set growth over the
baseline, sampled every few milliseconds while the calls run (an estimate).
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from argen.device import device_name, dtype_name, measure_peak
from argen.io import atomic_write_text
from argen.runtime import heap_in_use


@dataclass
class BenchConfig:
    """batch_sizes: batch sizes to time (1 gives the latency). warmup / repeats: calls per batch size.
    device: "auto" (cuda when available) or a torch device string. out: JSON path or None."""

    batch_sizes: tuple[int, ...] = (1, 8, 32)
    warmup: int = 1
    repeats: int = 3
    device: str = "auto"
    out: str | None = None

    def __post_init__(self) -> None:
        self.batch_sizes = tuple(self.batch_sizes)
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"batch_sizes must be positive integers, got {self.batch_sizes}")
        if self.warmup < 0 or self.repeats < 1:
            raise ValueError("need warmup >= 0 and repeats >= 1")

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


class _RssPeak:
    """Context manager polling memory in a thread; `.peak_delta` = the larger of the resident set's and (on
    glibc) malloc's bytes in use's growth over their values at entry. Freed memory that `argen.runtime`
    keeps mapped is reused without growing the resident set; malloc's count still sees it."""

    def __init__(self, interval_s: float = 0.005):
        self.interval_s = interval_s
        self.peak_delta = 0
        self._stop = threading.Event()

    def _delta(self) -> int:
        heap = heap_in_use()
        heap_delta = heap - self._heap if heap is not None and self._heap is not None else 0
        return max(_rss() - self._base, heap_delta)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak_delta = max(self.peak_delta, self._delta())
            time.sleep(self.interval_s)

    def __enter__(self) -> _RssPeak:
        self._base, self._heap = _rss(), heap_in_use()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_delta = max(self.peak_delta, self._delta())


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _time_call(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@dataclass
class SideBySide:
    """One call's timing in `side_by_side`: median CPU seconds, of them in the kernel (`sys_s`, to 10 ms), and
    wall seconds per call, and what its last call returned."""

    cpu_s: float
    sys_s: float
    wall_s: float
    result: Any


def _cpu_times() -> tuple[float, float]:
    """(CPU seconds, of them in the kernel) of this process and of its children waited for."""
    t = os.times()
    return time.process_time() + t.children_user + t.children_system, t.system + t.children_system


def side_by_side(
    calls: dict[str, Callable[[], Any]], rounds: int, warmup: bool = True
) -> dict[str, SideBySide]:
    """Time several calls against each other on a shared, noisy machine: one untimed call each (unless not
    `warmup`: calls that each start a fresh process have nothing to warm), then `rounds` rounds that call each
    in turn, so load falls on all alike; medians. CPU time is this process's (`time.process_time`) and that
    of the subprocesses a call runs and waits for: with one thread, the compute the call used whatever else
    the machine runs."""
    for fn in calls.values() if warmup else ():
        fn()
    times: dict[str, list[tuple[float, float, float]]] = {name: [] for name in calls}
    last: dict[str, Any] = {}
    for _ in range(rounds):
        for name, fn in calls.items():
            w0, (c0, s0) = time.perf_counter(), _cpu_times()
            last[name] = fn()
            c1, s1 = _cpu_times()
            times[name].append((c1 - c0, s1 - s0, time.perf_counter() - w0))
    return {
        name: SideBySide(*(statistics.median(t) for t in zip(*times[name], strict=True)), last[name])
        for name in calls
    }


def compare_samplers(
    samplers: dict[str, Callable[[int], Any]],
    batch_sizes: Sequence[int],
    rounds: int,
    flops_per_image: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Two samplers timed against each other at each batch size (`side_by_side`: a warm-up, then `rounds`
    rounds calling each in turn, medians), under inference mode: the ratio of the first to the second.

    Args:
        samplers: exactly two, `{name: sample_fn}` with `sample_fn(batch_size)` making that many images.
        flops_per_image: analytic FLOPs per image by name; adds their ratio.
    Returns:
        {"compared": [first, second], "threads", "load_avg_1min": [before, after], "rounds", "per_batch":
        [{"batch_size", first/second: {"cpu_s", "wall_s", "img_per_s"}, "time_ratio" (process CPU time,
        first / second), "wall_ratio"}], and "flops_ratio" with `flops_per_image`}.
    """
    if len(samplers) != 2:
        raise ValueError(f"compare_samplers needs exactly two samplers, got {len(samplers)}")
    first, second = samplers
    load_before = os.getloadavg()[0]
    rows = []
    for batch in batch_sizes:
        with torch.inference_mode():
            calls = {name: functools.partial(fn, batch) for name, fn in samplers.items()}
            timed = side_by_side(calls, rounds)
        row: dict[str, Any] = {"batch_size": batch}
        for name, t in timed.items():
            row[name] = {"cpu_s": t.cpu_s, "wall_s": t.wall_s, "img_per_s": batch / t.wall_s}
        row["time_ratio"] = timed[first].cpu_s / timed[second].cpu_s
        row["wall_ratio"] = timed[first].wall_s / timed[second].wall_s
        rows.append(row)
    out: dict[str, Any] = {
        "compared": [first, second],
        "time": "process CPU time (all threads) and wall-clock, medians of interleaved calls",
        "threads": torch.get_num_threads(),
        "load_avg_1min": [load_before, os.getloadavg()[0]],
        "rounds": rounds,
        "per_batch": rows,
    }
    if flops_per_image:
        out["flops_ratio"] = flops_per_image[first] / flops_per_image[second]
    return out


def bench_batch(
    sample_fn: Callable[[int], Any], batch_size: int, warmup: int, repeats: int, device: torch.device
) -> dict[str, Any]:
    """Time `sample_fn(batch_size)`; returns median seconds, img/s, all times and peak memory in bytes."""
    call = lambda: sample_fn(batch_size)
    with torch.inference_mode():
        for _ in range(warmup):
            call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            times = [_time_call(call, device) for _ in range(repeats)]
            peak = torch.cuda.max_memory_allocated(device)
            mem = {"peak_mem_bytes": peak, "peak_mem_over_baseline_bytes": peak - base}
        else:
            with _RssPeak() as rss:
                times = [_time_call(call, device) for _ in range(repeats)]
            mem = {"peak_mem_bytes": None, "peak_mem_over_baseline_bytes": rss.peak_delta}
    med = statistics.median(times)
    return {"batch_size": batch_size, "median_s": med, "img_per_s": batch_size / med, "times_s": times, **mem}


def bench_sampler(
    sample_fn: Callable[[int], Any],
    batch_sizes: Sequence[int] = (1, 8, 32),
    warmup: int = 1,
    repeats: int = 3,
    device: torch.device | str = "cpu",
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Benchmark a sampler over batch sizes.

    Args:
        sample_fn: `sample_fn(batch_size)` generates that many images (on `device`).
        batch_sizes / warmup / repeats: see BenchConfig. device: where the sampler runs.
        meta: caller facts merged into the JSON (model name, steps, tokens, analytic `flops_per_image`...).

    Returns:
        {"device", "torch", "host", "per_batch": [...], "latency_batch1_s", "img_per_s" (best over batch
        sizes), "best_batch_size", "peak_mem_bytes", plus `meta`; with `flops_per_image` in meta also
        "achieved_flops_per_s" at the best throughput, and with `peak_flops_per_s` too "mfu" (achieved /
        peak)}.
    """
    device = torch.device(device)
    rows = [bench_batch(sample_fn, bs, warmup, repeats, device) for bs in batch_sizes]
    best = max(rows, key=lambda r: r["img_per_s"])
    out: dict[str, Any] = {
        "device": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "warmup": warmup,
        "repeats": repeats,
        "per_batch": rows,
        "latency_batch1_s": next((r["median_s"] for r in rows if r["batch_size"] == 1), None),
        "img_per_s": best["img_per_s"],
        "best_batch_size": best["batch_size"],
        "peak_mem_bytes": max((r["peak_mem_bytes"] or r["peak_mem_over_baseline_bytes"]) for r in rows),
        "peak_mem_kind": "cuda_max_memory_allocated" if device.type == "cuda" else "cpu_rss_growth_estimate",
    }
    out.update(meta or {})
    if (meta or {}).get("flops_per_image"):
        out["achieved_flops_per_s"] = meta["flops_per_image"] * best["img_per_s"]
        if meta.get("peak_flops_per_s"):
            out["mfu"] = out["achieved_flops_per_s"] / meta["peak_flops_per_s"]
    return out


def run_bench(
    cfg: BenchConfig,
    sample_fn: Callable[[int], Any],
    meta: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """`bench_sampler` from a BenchConfig; writes the JSON to `cfg.out` when set.

    With the sampler's `dtype`, this machine's matmul peak in that dtype is measured first (see
    `argen.device`) and the report gains "dtype", "peak_flops_per_s" and "mfu".
    """
    device = cfg.resolved_device()
    meta = dict(meta or {})
    if dtype is not None:
        name = dtype_name(dtype)
        meta["dtype"] = name
        meta["peak_flops_per_s"] = measure_peak(device, [name])["dtypes"][name]["peak_flops_per_s"]
    res = bench_sampler(sample_fn, cfg.batch_sizes, cfg.warmup, cfg.repeats, device, meta)
    if cfg.out is not None:
        atomic_write_text(cfg.out, json.dumps(res, indent=2) + "\n")  # (makes the folder)
    return res
