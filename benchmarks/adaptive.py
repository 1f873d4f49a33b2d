"""Confidence-adaptive EAR passes against fixed schedules, same model: batch-1 latency and quality.

Two parts (`--part`, default both):
  latency  batch-1 time per image of every setting, side by side: each round samples the same images
           (classes 0, 1, ... in turn, seed 0) under every setting in turn (`argen.eval.bench.side_by_side`,
           medians), so machine load falls on all alike. Adaptive decoding is a latency tool (each image runs
           its own schedule), so one image at a time is the comparison that matters.
  quality  `argen eval` of each row at the results table's protocol (N=1000, seed 0, FID/KID against 5000
           train images): passes and FLOPs that really ran, sampling time and quality; writes
           `<results>/<row>.eval.json`, and a report that exists is kept (delete it to re-run).
Backs "Adaptive EAR passes against fixed schedules" in docs/05-benchmarks-results.md
(results/fmnist/adaptive/).

    python -m benchmarks adaptive --threads 1 --part quality              # FID rows (about 10 min each)
    python -m benchmarks adaptive --threads 1 --part latency --out results/fmnist/adaptive/latency.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
from functools import partial
from pathlib import Path
from typing import Any

import torch

from argen.eval.bench import side_by_side
from argen.sampling.pipeline import GenerateConfig, Pipeline
from benchmarks import common

ROOT = Path(__file__).resolve().parents[1]
# the smoke run's reports go under benchmarks.common.WORK (read when it runs: tests move it)
SMOKE = ["--rows", "fixed31,fixed8,adaptive0.7", "--rounds", "1", "--images", "1", "--rerun"]
SMOKE += ["--n", "8", "--ref-n", "64", "--features", "classifier"]

# setting -> GenerateConfig fields (and the `argen eval` options of the same)
SETTINGS: dict[str, dict[str, Any]] = {
    "fixed31": {},
    "fixed16": {"schedule": 16},
    "fixed12": {"schedule": 12},
    "fixed8": {"schedule": 8},
    "adaptive0.3": {"adaptive": 0.3},
    "adaptive0.5": {"adaptive": 0.5},
    "adaptive0.7": {"adaptive": 0.7},
    "adaptive0.9": {"adaptive": 0.9},
}
QUALITY_ROWS = ("fixed31", "adaptive0.5", "fixed12", "fixed16", "adaptive0.7", "fixed8")


def _rows(text: str) -> list[str]:
    names = text.split(",")
    unknown = sorted(set(names) - set(SETTINGS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown rows {unknown}; there are: {', '.join(SETTINGS)}")
    return names


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--part", choices=("latency", "quality", "all"), default="all", help="(default: all)")
    p.add_argument("--model", default="ear_any_fmnist", help="an any-schedule EAR (default: the shipped one)")
    p.add_argument("--tokenizer", default="", help="default: the one the model records")
    p.add_argument(
        "--rows",
        type=_rows,
        help=f"comma-separated settings (default: latency all, quality {','.join(QUALITY_ROWS)})",
    )
    p.add_argument("--rounds", type=int, default=5, help="latency: interleaved rounds (medians)")
    p.add_argument("--images", type=int, default=10, help="latency: images per round (classes cycled)")
    p.add_argument("--results", help="quality: report folder (default: results/fmnist/adaptive)")
    p.add_argument("--rerun", action="store_true", help="quality: re-run rows whose report exists")
    p.add_argument("--device", default="cpu", help="quality: argen eval's device")
    p.add_argument("--n", type=int, default=1000, help="quality: images sampled and scored")
    p.add_argument("--ref-n", type=int, default=5000, help="quality: train images of the reference")
    p.add_argument(
        "--features", default="inception", help="inception (FID) or classifier (cheap, NON-standard)"
    )


def latency(args: argparse.Namespace) -> dict[str, Any]:
    rows = args.rows or list(SETTINGS)
    pipes = {
        name: Pipeline.load(
            GenerateConfig(
                model=args.model,
                tokenizer=args.tokenizer,
                batch_size=1,
                device="cpu",
                dtype="fp32",
                **SETTINGS[name],
            )
        )
        for name in rows
    }
    labels = torch.arange(args.images) % 10
    timed = side_by_side({name: partial(pipe.sample, labels) for name, pipe in pipes.items()}, args.rounds)
    wall = {name: t.wall_s / len(labels) for name, t in timed.items()}  # per image
    base = wall[rows[0]]
    return {
        "model": args.model,
        "threads": torch.get_num_threads(),
        "dtype": "fp32",
        "batch_size": 1,
        "images_per_round": len(labels),
        "rounds": args.rounds,
        "time": "wall-clock per image, medians of interleaved rounds",
        "ratios_against": rows[0],
        "rows": {
            name: {
                "mean_passes": round(timed[name].result.mean_passes, 2),
                "median_s_per_image": round(wall[name], 4),
                f"vs_{rows[0]}": round(wall[name] / base, 3),
            }
            for name in pipes
        },
    }


def _eval_flags(setting: dict[str, Any]) -> list[str]:
    return [a for key, value in setting.items() for a in (f"--{key}", str(value))]


def quality(args: argparse.Namespace) -> dict[str, Any]:
    from argen.cli import main

    default = common.WORK / "adaptive" if args.smoke else ROOT / "results/fmnist/adaptive"
    folder = Path(args.results) if args.results else default
    done: dict[str, list[str]] = {"evaluated": [], "kept": []}
    rows = {}
    for name in args.rows or QUALITY_ROWS:
        out = folder / f"{name}.eval.json"
        if out.exists() and not args.rerun:
            done["kept"].append(name)
        else:
            argv = ["eval", "--model", args.model, "--tokenizer", args.tokenizer, "--n", str(args.n)]
            argv += ["--device", args.device, *_eval_flags(SETTINGS[name])]
            sets = [f"ref_n={args.ref_n}", f"features={args.features}", f"out={out}"]
            with contextlib.redirect_stdout(io.StringIO()):  # the report is in `out`; stdout stays this one's
                main([*argv, *(a for s in sets for a in ("--set", s))])
            done["evaluated"].append(name)
        report = json.loads(out.read_text())
        gen = report["generator"]
        rows[name] = {
            "report": str(out),
            **{k: report.get(k) for k in ("fid", "kid_mean", "class_accuracy", "features", "n")},
            **{k: gen.get(k) for k in ("steps", "gflops", "sample_seconds")},
        }
    return {"model": args.model, "results": str(folder), **done, "rows": rows}


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"part": args.part}
    if args.part in ("latency", "all"):
        out["latency"] = latency(args)
    if args.part in ("quality", "all"):
        out["quality"] = quality(args)
    return out


def check(result: dict[str, Any]) -> None:
    timed = result["latency"]["rows"]
    for name, row in timed.items():
        assert row["median_s_per_image"] > 0 and 0 < row["vs_fixed31"] < math.inf, name
    assert timed["fixed31"]["mean_passes"] == 31 and timed["fixed8"]["mean_passes"] == 8
    assert 0 < timed["adaptive0.7"]["mean_passes"] <= 31
    scored = result["quality"]
    assert scored["evaluated"] == ["fixed31", "fixed8", "adaptive0.7"] and not scored["kept"]
    for name, row in scored["rows"].items():
        assert math.isfinite(row["fid"]) and 0 <= row["class_accuracy"] <= 1 and row["n"] == 8, name
    assert scored["rows"]["fixed8"]["steps"] == 8 and scored["rows"]["fixed31"]["steps"] == 31
    assert scored["rows"]["fixed8"]["gflops"] < scored["rows"]["fixed31"]["gflops"]
