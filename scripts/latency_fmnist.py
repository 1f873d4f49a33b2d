"""Batch-1 latency of the shipped generators, measured side by side (interleaved rounds, medians).

One image at a time is where EAR's few passes should pay against the raster baseline's 256. Every round
samples the same images (classes 0..9, seed 0) with every model in turn (`argen.eval.bench.side_by_side`),
so machine load falls on all of them alike. Time is both wall-clock and the process's CPU time (with one
thread, the compute the sampling used, whatever else the machine runs). Each model samples with its shipped
settings; tokenizer decoding included.

    OMP_NUM_THREADS=1 python scripts/latency_fmnist.py --out results/fmnist/latency_b1.json
"""

from __future__ import annotations

import argparse
import json
import os
from functools import partial

import torch

from argen.eval.bench import side_by_side
from argen.io import atomic_write_text
from argen.sampling.pipeline import GenerateConfig, Pipeline

# row -> (shipped model, EAR schedule or None)
ROWS = {
    "raster": ("raster_fmnist", None),
    "ear31": ("ear_fmnist", None),
    "ear_any8": ("ear_any_fmnist", 8),
    "var": ("var_fmnist", None),
    "actvar": ("actvar_fmnist", None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows: " + ", ".join(ROWS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--out", default="results/fmnist/latency_b1.json")
    args = parser.parse_args()
    rows = args.rows.split(",")
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    pipes = {
        name: Pipeline.load(
            GenerateConfig(
                model=ROWS[name][0], schedule=ROWS[name][1], batch_size=1, device="cpu", dtype=args.dtype
            )
        )
        for name in rows
    }
    labels = torch.arange(10)
    timed = side_by_side({name: partial(pipe.sample, labels) for name, pipe in pipes.items()}, args.rounds)
    cpu = {name: t.cpu_s / len(labels) for name, t in timed.items()}  # per image
    wall = {name: t.wall_s / len(labels) for name, t in timed.items()}
    base = rows[0]
    report = {
        "command": "python scripts/latency_fmnist.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "dtype": args.dtype,
        "batch_size": 1,
        "images_per_round": len(labels),
        "rounds": args.rounds,
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
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")  # (makes the folder)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
