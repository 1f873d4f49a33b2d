"""Choose a generator's sampling settings by a small sweep scored against a held-out reference.

Every point of the grid is sampled (`argen eval`, N images, sampling seed 100 so that the table's seeds 0
and 1 are not reused) and scored by Inception FID/KID against 1000 Fashion-MNIST *test* images (the floor's
cached statistics): the results table scores against 5000 *train* images, so the settings are not chosen on
the table's own reference. The point with the lowest FID is chosen (KID is reported beside it); at N=300 FID
carries a large fixed bias, so only its differences between points mean something.
Writes results/fmnist/sweep/<name>.json.

    python scripts/sweep_sampling.py --name ear31 --model argen/assets/ear_fmnist.safetensors \
        --tokenizer argen/assets/vq2_fmnist.safetensors --grid cfg=1.5,2.5,4 --grid temperature=0.9,1.0
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# sweep setting -> (sampler flag, SamplingConfig field); the summary JSON records both forms of the choice
SETTINGS = {
    "cfg": ("--cfg", "cfg_scale"),
    "temperature": ("--temperature", "temperature"),
    "top_k": ("--top-k", "top_k"),
    "top_p": ("--top-p", "top_p"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="row name (results/fmnist/sweep/<name>.json)")
    p.add_argument("--model", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--grid", action="append", default=[], help="setting=v1,v2,... (cfg, temperature, ...)")
    p.add_argument("--n", type=int, default=300, help="samples per point")
    p.add_argument("--seed", type=int, default=100, help="sampling seed (not one of the table's)")
    p.add_argument(
        "--extra", default="", help="further sampler options for every point, e.g. '--schedule 16'"
    )
    p.add_argument("--out-dir", default=str(ROOT / "results/fmnist/sweep"))
    args = p.parse_args()
    grid = {}
    for item in args.grid:
        key, _, values = item.partition("=")
        if key not in SETTINGS or not values:
            known = sorted(SETTINGS)
            raise SystemExit(f"--grid takes setting=v1,v2 with setting one of {known}; got {item!r}")
        grid[key] = [float(v) if key != "top_k" else int(v) for v in values.split(",")]
    out_dir = Path(args.out_dir)
    (out_dir / args.name).mkdir(parents=True, exist_ok=True)
    points = []
    for values in itertools.product(*grid.values()):
        setting = dict(zip(grid, values, strict=True))
        tag = "_".join(f"{k}{v}" for k, v in setting.items()) or "default"
        report = out_dir / args.name / f"{tag}.json"
        if not report.exists():  # a rerun resumes the sweep
            cmd = [
                sys.executable,
                "-m",
                "argen",
                "eval",
                "--model",
                args.model,
                "--tokenizer",
                args.tokenizer,
            ]
            cmd += ["--n", str(args.n), "--seed", str(args.seed), *args.extra.split()]
            for k, v in setting.items():
                cmd += [SETTINGS[k][0], str(v)]
            cmd += ["--set", "ref_split=test", "--set", "floor=false", "--set", "ref_n=1000"]
            cmd += ["--set", f"out={report}"]
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, cwd=ROOT)
        r = json.loads(report.read_text())
        points.append(
            {**setting, "fid": r["fid"], "kid": r["kid_mean"], "class_accuracy": r.get("class_accuracy")}
        )
        print(f"{args.name} {setting}: FID {r['fid']:.2f} KID {r['kid_mean']:.4f}", flush=True)
    best = min(points, key=lambda q: q["fid"])
    summary = {
        "name": args.name,
        "model": args.model,
        "tokenizer": args.tokenizer,
        "n": args.n,
        "sampling_seed": args.seed,
        "extra": args.extra,
        "reference": "Fashion-MNIST test split, 1000 images (the table uses 5000 train images)",
        "chosen": {k: best[k] for k in grid},
        "flags": " ".join(f"{SETTINGS[k][0]} {best[k]}" for k in grid),  # for scripts/results_fmnist.sh
        "sampling": {SETTINGS[k][1]: best[k] for k in grid},  # SamplingConfig fields (export_asset.py)
        "points": points,
    }
    (out_dir / f"{args.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{args.name}: chosen {summary['chosen']} (FID {best['fid']:.2f})")


if __name__ == "__main__":
    main()
