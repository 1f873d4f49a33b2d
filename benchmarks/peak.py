"""Matmul peak FLOP/s per dtype on this machine (what `argen peak` prints; the MFU denominators).

python -m benchmarks peak --threads 1 --out results/cpu/peak.json
python -m benchmarks peak --device cuda --shapes 8192x8192x8192
"""

from __future__ import annotations

import argparse
from typing import Any

from argen.device import SHAPES, measure_peak

SMOKE = ["--shapes", "64x64x64", "--repeats", "1"]


def _shape(text: str) -> tuple[int, int, int]:
    m, k, n = (int(v) for v in text.lower().split("x"))
    return m, k, n


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma-separated (default: fp32,bf16)")
    p.add_argument(
        "--shapes",
        type=lambda s: [_shape(v) for v in s.split(",")],
        default=list(SHAPES),
        help="MxKxN matmul shapes, comma-separated (default: argen peak's)",
    )
    p.add_argument("--repeats", type=int, default=5)


def run(args: argparse.Namespace) -> dict[str, Any]:
    return measure_peak(args.device, args.dtypes.split(","), args.shapes, args.repeats)


def check(result: dict[str, Any]) -> None:
    for name in ("fp32", "bf16"):
        assert result["dtypes"][name]["peak_flops_per_s"] > 1e6
    assert result["bf16_over_fp32"] > 0
