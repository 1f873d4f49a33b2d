"""Batch-1 latency of adaptive vs fixed EAR schedules, measured side by side (interleaved rounds, medians).

Adaptive decoding is a latency tool (each image runs its own schedule), so the comparison that matters is one
image at a time. Every round samples the same images (classes 0..9, seed 0) under every setting in turn, so
machine load affects all settings alike. Prints and writes JSON.

    OMP_NUM_THREADS=1 python scripts/adaptive_latency.py --out results/fmnist/adaptive/latency.json
"""

from __future__ import annotations

import argparse
import json
from functools import partial

import torch

from argen.eval.bench import side_by_side
from argen.io import atomic_write_text
from argen.sampling.pipeline import GenerateConfig, Pipeline

SETTINGS = {
    "fixed31": {},
    "fixed16": {"schedule": 16},
    "fixed12": {"schedule": 12},
    "fixed8": {"schedule": 8},
    "adaptive0.3": {"adaptive": 0.3},
    "adaptive0.5": {"adaptive": 0.5},
    "adaptive0.7": {"adaptive": 0.7},
    "adaptive0.9": {"adaptive": 0.9},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ear_any_fmnist")
    parser.add_argument("--tokenizer", default="", help="default: the one the model records")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="results/fmnist/adaptive/latency.json")
    args = parser.parse_args()
    pipes = {
        name: Pipeline.load(GenerateConfig(model=args.model, tokenizer=args.tokenizer, batch_size=1, **extra))
        for name, extra in SETTINGS.items()
    }
    labels = torch.arange(10)
    timed = side_by_side({name: partial(pipe.sample, labels) for name, pipe in pipes.items()}, args.rounds)
    wall = {name: t.wall_s / len(labels) for name, t in timed.items()}  # per image
    base = wall["fixed31"]
    report = {
        "model": args.model,
        "threads": torch.get_num_threads(),
        "dtype": "fp32",
        "batch_size": 1,
        "images_per_round": len(labels),
        "rounds": args.rounds,
        "rows": {
            name: {
                "mean_passes": round(timed[name].result.mean_passes, 2),
                "median_s_per_image": round(wall[name], 4),
                "vs_fixed31": round(wall[name] / base, 3),
            }
            for name in pipes
        },
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")  # (makes the folder)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
