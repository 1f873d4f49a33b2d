"""Evaluator sanity: real held-out images should score at the floor, degraded (pixelated) ones above it.

"Samples" are n Fashion-MNIST test images (a different random subset than the floor's) with their labels,
and the same images pixelated (2x2 average, nearest upsampling), each scored by `argen eval`'s code
(`argen.eval.evaluate`: FID, KID, precision/recall, class accuracy, and the real-vs-real floor at the same
n). One `argen eval` JSON report per set goes to `--out-dir`; the result holds their headline metrics.
A check of the evaluator behind every FID in the docs: it must rank real above degraded images and put
real ones at the floor (no docs number quotes this run itself).

    python -m benchmarks eval_sanity --features classifier --n 1000 --ref-n 10000 --out-dir out/eval_sanity
    python -m benchmarks eval_sanity --features inception --n 1000 --ref-n 10000 --threads 2
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks import common

SMOKE = ["--features", "classifier", "--n", "256", "--ref-n", "1024", "--fid-method", "eigh"]
METRICS = ("n", "fid", "kid_mean", "precision", "recall", "class_accuracy")


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", default="inception", choices=("inception", "classifier"))
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--ref-n", type=int, default=10000)
    p.add_argument("--fid-method", default="sqrtm", choices=("sqrtm", "eigh"))
    p.add_argument("--sample-seed", type=int, default=123)
    p.add_argument("--out-dir", help="the eval reports (default: ARGEN_BENCH_WORK/eval_sanity)")


def pixelate(images_u8: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) uint8 -> the same with every 2x2 block replaced by its mean."""
    x = F.avg_pool2d(images_u8.float(), 2)
    return F.interpolate(x, scale_factor=2, mode="nearest").round().clamp(0, 255).to(torch.uint8)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from argen.eval.evaluate import EvalConfig, evaluate, fmnist_u8

    out_dir = Path(args.out_dir or common.WORK / "eval_sanity")
    imgs, labels = fmnist_u8("test", args.n, seed=args.sample_seed)
    result: dict[str, Any] = {"features": None, "ref_n": args.ref_n, "fid_method": args.fid_method}
    result["threads"] = torch.get_num_threads()
    for name, x in (("real_test", imgs), ("pixelated_test", pixelate(imgs))):
        cfg = EvalConfig(
            features=args.features,
            n=args.n,
            ref_n=args.ref_n,
            fid_method=args.fid_method,
            sample_seed=args.sample_seed,
            out=str(out_dir / f"{args.features}_{name}.json"),
            progress=False,
        )
        rep = evaluate(cfg, x, labels)
        result["features"] = rep["features"]
        result[name] = {k: rep[k] for k in METRICS} | {"seconds": rep["seconds"], "report": cfg.out}
        result["floor"] = {k: rep["floor"][k] for k in METRICS}
    return result


def check(result: dict[str, Any]) -> None:
    real, pixelated, floor = result["real_test"], result["pixelated_test"], result["floor"]
    assert real["n"] == pixelated["n"] == floor["n"] == 256
    assert 0 <= max(real["fid"], floor["fid"]) < pixelated["fid"], (real, floor, pixelated)
    assert real["class_accuracy"] > 0.7 and real["class_accuracy"] >= pixelated["class_accuracy"]
    assert abs(real["fid"] - floor["fid"]) < pixelated["fid"] - real["fid"], "real images sit near the floor"
