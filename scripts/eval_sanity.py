"""Sanity numbers for the evaluator: real held-out images should sit at the floor, degraded ones above it.

"Samples" are n Fashion-MNIST test images (a different random subset than the floor's) with their labels,
and the same images pixelated (2x2 average, nearest upsampling). Writes one JSON per set.

Example:
    python scripts/eval_sanity.py --features classifier --n 1000 --ref-n 10000 --out out/eval_sanity
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from argen.eval.evaluate import EvalConfig, evaluate, fmnist_u8


def pixelate(images_u8: torch.Tensor) -> torch.Tensor:
    x = F.avg_pool2d(images_u8.float(), 2)
    return F.interpolate(x, scale_factor=2, mode="nearest").round().clamp(0, 255).to(torch.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", default="inception", choices=("inception", "classifier"))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--ref-n", type=int, default=10000)
    ap.add_argument("--fid-method", default="sqrtm", choices=("sqrtm", "eigh"))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--sample-seed", type=int, default=123)
    ap.add_argument("--out", default="out/eval_sanity")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    imgs, labels = fmnist_u8("test", args.n, seed=args.sample_seed)
    summary = {}
    for name, x in (("real_test", imgs), ("pixelated_test", pixelate(imgs))):
        out = Path(args.out) / f"{args.features}_{name}.json"
        cfg = EvalConfig(
            features=args.features,
            n=args.n,
            ref_n=args.ref_n,
            fid_method=args.fid_method,
            sample_seed=args.sample_seed,
            out=str(out),
        )
        rep = evaluate(cfg, x, labels)
        summary[name] = {k: rep[k] for k in ("n", "fid", "kid_mean", "precision", "recall", "class_accuracy")}
        summary[name]["seconds"] = rep["seconds"]
        summary["floor"] = {
            k: rep["floor"][k] for k in ("n", "fid", "kid_mean", "precision", "recall", "class_accuracy")
        }
    print(json.dumps({"features": rep["features"], "ref_n": args.ref_n, **summary}, indent=2))


if __name__ == "__main__":
    main()
