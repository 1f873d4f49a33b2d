"""Batch-1 latency of the shipped generators, measured side by side (interleaved rounds, medians).

One image at a time is where EAR's few passes should pay against the raster baseline's 256. Every round
samples the same images (classes 0, 1, ... in turn, seed 0) with every model in turn
(`argen.eval.bench.side_by_side`), so machine load falls on all of them alike. Time is both wall-clock and the
process's CPU time (with one thread, the compute the sampling used, whatever else the machine runs), per
image. Each model samples with its shipped settings; tokenizer decoding included. Backs "Batch-1 latency side
by side" in docs/05-benchmarks-results.md (results/fmnist/latency_b1.json).

    OMP_NUM_THREADS=1 python -m benchmarks latency --threads 1 --out results/fmnist/latency_b1.json
    python -m benchmarks latency --rows raster,ear_any8 --rounds 9 --dtype bf16
"""

from __future__ import annotations

import argparse
import math
from functools import partial
from typing import Any

import torch

from argen.eval.bench import side_by_side
from argen.sampling.pipeline import GenerateConfig, Pipeline

SMOKE = ["--rounds", "1", "--images", "1"]

# row -> (shipped model, EAR schedule or None)
ROWS = {
    "raster": ("raster_fmnist", None),
    "ear31": ("ear_fmnist", None),
    "ear_any8": ("ear_any_fmnist", 8),
    "var": ("var_fmnist", None),
    "actvar": ("actvar_fmnist", None),
}


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rows",
        default=",".join(ROWS),
        help="comma-separated, the first is the baseline: " + ", ".join(ROWS),
    )
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians)")
    p.add_argument("--images", type=int, default=10, help="images per round, one at a time (classes cycled)")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = args.rows.split(",")
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        raise SystemExit(f"latency: unknown rows {unknown}; choose from {', '.join(ROWS)}")
    pipes = {
        name: Pipeline.load(
            GenerateConfig(
                model=ROWS[name][0], schedule=ROWS[name][1], batch_size=1, device="cpu", dtype=args.dtype
            )
        )
        for name in rows
    }
    labels = torch.arange(args.images) % 10
    timed = side_by_side({name: partial(pipe.sample, labels) for name, pipe in pipes.items()}, args.rounds)
    cpu = {name: t.cpu_s / len(labels) for name, t in timed.items()}  # per image
    wall = {name: t.wall_s / len(labels) for name, t in timed.items()}
    base = rows[0]
    return {
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "batch_size": 1,
        "images_per_round": len(labels),
        "rounds": args.rounds,
        "time": "process CPU time (all threads) and wall-clock per image, medians of interleaved rounds",
        "ratios_against": base,
        "rows": {
            name: {
                "model": ROWS[name][0],
                "passes": round(timed[name].result.mean_passes, 2),
                "cpu_s_per_image": round(cpu[name], 4),
                "wall_s_per_image": round(wall[name], 4),
                f"cpu_vs_{base}": round(cpu[name] / cpu[base], 3),
                f"wall_vs_{base}": round(wall[name] / wall[base], 3),
            }
            for name in pipes
        },
    }


def check(result: dict[str, Any]) -> None:
    rows = result["rows"]
    for name, row in rows.items():
        assert row["wall_s_per_image"] > 0 and 0 < row["wall_vs_raster"] < math.inf, name
        assert 0 < row["cpu_vs_raster"] < math.inf, name
    assert {name: row["passes"] for name, row in rows.items()} == {
        "raster": 256,
        "ear31": 31,
        "ear_any8": 8,
        "var": 10,
        "actvar": 10,
    }
    assert rows["raster"]["wall_vs_raster"] == 1.0
    assert rows["ear31"]["cpu_vs_raster"] < 1  # 31 passes against 256 (CPU time: whatever the load)
