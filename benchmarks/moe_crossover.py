"""Where running only the chosen experts beats the masked dense FFN: time of each expert backend / dense FFN.

For FFN shapes of width C (hidden 4C) split into E experts of M units, N tokens with k experts each, times the
dense FFN, the masked form and the grouped kernels ("segment", "padded") side by side (interleaved, medians),
inference mode, the given dtype and thread count, process CPU time, freed memory kept for reuse as the CLI's
sampling commands do (`--system-malloc` to measure without). `cost` = (grouped time / dense time) / (k / E):
grouped pays where (k / E) * cost < 1 (the masked form costs about the dense FFN).
`argen.nn.expert_kernels.GROUPED_COST_CPU` holds the CPU costs this benchmark measured (one thread, fp32,
results/cpu/moe_crossover.json); docs/actvar_speed.md and docs/05-benchmarks-results.md quote them.

    python -m benchmarks moe_crossover --threads 1 --out results/cpu/moe_crossover.json
    python -m benchmarks moe_crossover --threads 1 --dtype bf16 --shapes 128x16x6500,1024x16x1600
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from argen.nn.moe import MoEFFN
from argen.runtime import keep_freed_memory

SMOKE = ["--shapes", "32x4x64", "--fractions", "0.5", "--repeats", "1", "--system-malloc"]

# (width C, experts E, tokens N): fmnist width 128 at its last scales (batch 16 with CFG: ~6.5k kept
# tokens), and VAR-d16..d30-like widths at the tokens of a batch of a few images.
SHAPES = [
    (128, 16, 6500),
    (128, 8, 6500),
    (128, 4, 6500),
    (256, 16, 4000),
    (512, 16, 2000),
    (1024, 16, 1600),
    (1024, 8, 1600),
]
BACKENDS = ("masked", "segment", "padded")


def _shape(text: str) -> tuple[int, int, int]:
    width, experts, tokens = (int(v) for v in text.lower().split("x"))
    return width, experts, tokens


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--fractions", default="0.75,0.5,0.25", help="k / E values")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--shapes",
        type=lambda s: [_shape(v) for v in s.split(",")],
        default=list(SHAPES),
        help="CxExN (width, experts, tokens), comma-separated (default: fmnist's and VAR-d16..d30-like)",
    )
    p.add_argument("--system-malloc", action="store_true", help="skip argen.runtime.keep_freed_memory")


def timed(fn: Callable[[], Any]) -> float:
    """CPU seconds of this process for one call (one thread: other processes' load stays out)."""
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def measure(width: int, experts: int, tokens: int, frac: float, dtype: torch.dtype, repeats: int) -> dict:
    """One row: each backend's and the dense FFN's median time at k = frac * experts."""
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
    x = torch.randn(tokens, width, dtype=dtype)
    k = max(1, round(frac * experts))
    ffns = {b: MoEFFN.from_dense(fc1, fc2, experts, kmeans_iters=2, backend=b).to(dtype) for b in BACKENDS}
    for f in ffns.values():
        with torch.no_grad():
            f.router.weight.normal_()
    calls = {
        "dense": lambda f=ffns["masked"]: f(x),  # every expert on: the dense FFN, as VAR runs it
        **{b: (lambda f=f: f(x, k)) for b, f in ffns.items()},
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for fn in calls.values():  # warm-up
            fn()
        for _ in range(repeats):  # interleaved: every backend sees the same machine load
            for name, fn in calls.items():
                times[name].append(timed(fn))
    med = {name: statistics.median(v) for name, v in times.items()}
    rel = {name: med[name] / med["dense"] for name in calls}
    return {
        "width": width,
        "experts": experts,
        "expert_hidden": 4 * width // experts,
        "tokens": tokens,
        "k": k,
        "k_frac": k / experts,
        "dense_ms": round(1e3 * med["dense"], 3),
        "time_over_dense": {n: round(v, 3) for n, v in rel.items()},
        "cost_segment": round(rel["segment"] / (k / experts), 3),
        "cost_padded": round(rel["padded"] / (k / experts), 3),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    kept = False if args.system_malloc else keep_freed_memory()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    rows = []
    for width, experts, tokens in args.shapes:
        for frac in map(float, args.fractions.split(",")):
            rows.append(measure(width, experts, tokens, frac, dtype, args.repeats))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "keep_freed_memory": kept,
        "time": "process CPU time, medians of interleaved calls",
        "rows": rows,
    }


def check(result: dict[str, Any]) -> None:
    (row,) = result["rows"]
    assert (row["width"], row["experts"], row["expert_hidden"], row["k"]) == (32, 4, 32, 2), row
    assert row["dense_ms"] > 0 and row["time_over_dense"]["dense"] == 1.0
    for name in ("cost_segment", "cost_padded"):
        assert math.isfinite(row[name]) and row[name] > 0, row
