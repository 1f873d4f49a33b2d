"""Sampling settings of the shipped Fashion-MNIST generators: a small sweep per model, the lowest FID chosen.

Every point of a sweep's grid is sampled (`argen eval`, N images, sampling seed 100 so that the results
table's seeds 0 and 1 are not reused) and scored by Inception FID/KID against 1000 Fashion-MNIST *test*
images (the floor's cached statistics): the results table (`python -m benchmarks results`) scores against
5000 *train* images, so the settings are not chosen on the table's own reference. The point with the lowest
FID is chosen (KID is reported beside it); at N=250 FID carries a large fixed bias, so only its differences
between points mean something. Writes `<out-dir>/<name>.json` (the choice: "flags" for the results table,
"sampling" for `python scripts/ship.py asset --sampling`) and one eval report per point under
`<out-dir>/<name>/` (a rerun resumes the sweep: a point whose report exists is not sampled again).

The shipped sweeps (`--rows`, default all) vary only the CFG scale (three values; the 2-core CPU budget of the
retraining session); temperature, top-k and top-p stay at each family's defaults. var's choice sat at its
grid's edge: var_wide checks it with a wider grid (it chose 3.5 again).

python -m benchmarks sweep                             # raster, ear31, var, var_wide -> results/fmnist/sweep/
python -m benchmarks sweep --rows ear31 --grid cfg=1.5,2.5,4 --grid temperature=0.9,1.0
python -m benchmarks sweep --name ear31_s16 --model ear_any_fmnist --tokenizer vq2_fmnist \
    --grid cfg=1.5,2.5,3.5 --extra "--schedule 16"
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any

from benchmarks import common

ROOT = Path(__file__).resolve().parents[1]
# sweep setting -> (sampler flag, SamplingConfig field); the summary JSON records both forms of the choice
SETTINGS = {
    "cfg": ("--cfg", "cfg_scale"),
    "temperature": ("--temperature", "temperature"),
    "top_k": ("--top-k", "top_k"),
    "top_p": ("--top-p", "top_p"),
}
CFG = ["cfg=1.5,2.5,3.5"]
SWEEPS = {  # name -> (model asset, tokenizer asset, grid)
    "raster": ("raster_fmnist", "vq2_fmnist", CFG),
    "ear31": ("ear_fmnist", "vq2_fmnist", CFG),
    "var": ("var_fmnist", "msvq2_fmnist", CFG),
    "var_wide": ("var_fmnist", "msvq2_fmnist", ["cfg=1.5,2.5,3.5,4.5,5.5"]),
}
# two points at N=4, scored by the classifier's features (cheap; the Inception reference takes minutes)
SMOKE = ["--rows", "var", "--grid", "cfg=1.5,3.5", "--n", "4", "--ref-n", "64", "--features", "classifier"]


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rows", default=",".join(SWEEPS), help=f"shipped sweeps, comma-separated: {', '.join(SWEEPS)}"
    )
    p.add_argument(
        "--name", help="a sweep of your own: its name (with --model and --tokenizer; --rows unused)"
    )
    p.add_argument("--model")
    p.add_argument("--tokenizer")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        help="setting=v1,v2,... (cfg, temperature, top_k, top_p); "
        "repeatable; replaces the shipped sweeps' grids",
    )
    p.add_argument("--n", type=int, default=250, help="samples per point")
    p.add_argument("--seed", type=int, default=100, help="sampling seed (not one of the table's)")
    p.add_argument(
        "--extra", default="", help="further sampler options for every point, e.g. '--schedule 16'"
    )
    p.add_argument("--ref-n", type=int, default=1000, help="test images of the reference")
    p.add_argument(
        "--features", default="inception", help="inception (FID) or classifier (cheap, NON-standard)"
    )
    p.add_argument("--out-dir", help="(default: results/fmnist/sweep; smoke: a work folder)")


def parse_grid(items: list[str]) -> dict[str, list[float | int]]:
    grid: dict[str, list[float | int]] = {}
    for item in items:
        key, _, values = item.partition("=")
        if key not in SETTINGS or not values:
            raise SystemExit(
                f"--grid takes setting=v1,v2 with setting one of {sorted(SETTINGS)}; got {item!r}"
            )
        grid[key] = [float(v) if key != "top_k" else int(v) for v in values.split(",")]
    return grid


def choose(points: list[dict[str, Any]], grid: dict[str, list]) -> dict[str, Any]:
    """The lowest-FID point, as the grid's settings, sampler flags and SamplingConfig fields."""
    best = min(points, key=lambda q: q["fid"])
    return {
        "chosen": {k: best[k] for k in grid},
        "flags": " ".join(f"{SETTINGS[k][0]} {best[k]}" for k in grid),  # for benchmarks/results.py
        "sampling": {SETTINGS[k][1]: best[k] for k in grid},  # SamplingConfig fields (scripts/ship.py asset)
        "fid": best["fid"],
    }


def sweep(args: argparse.Namespace, name: str, model: str, tokenizer: str, grid: dict, out_dir: Path) -> dict:
    """Score every point of `grid` (kept reports reused) and write the summary `out_dir/name.json`."""
    from argen.cli import main

    (out_dir / name).mkdir(parents=True, exist_ok=True)
    points = []
    for values in itertools.product(*grid.values()):
        setting = dict(zip(grid, values, strict=True))
        tag = "_".join(f"{k}{v}" for k, v in setting.items()) or "default"
        report = out_dir / name / f"{tag}.json"
        if not report.exists():  # a rerun resumes the sweep
            cmd = [
                "eval",
                "--model",
                model,
                "--tokenizer",
                tokenizer,
                "--n",
                str(args.n),
                "--seed",
                str(args.seed),
            ]
            cmd += args.extra.split() + [a for k, v in setting.items() for a in (SETTINGS[k][0], str(v))]
            sets = ["ref_split=test", "floor=false", f"ref_n={args.ref_n}", f"features={args.features}"]
            main(cmd + [a for s in [*sets, f"out={report}"] for a in ("--set", s)])
        r = json.loads(report.read_text())
        points.append(
            {**setting, "fid": r["fid"], "kid": r["kid_mean"], "class_accuracy": r.get("class_accuracy")}
        )
        print(f"{name} {setting}: FID {r['fid']:.2f} KID {r['kid_mean']:.4f}", file=sys.stderr, flush=True)
    choice = choose(points, grid)
    summary = {
        "name": name,
        "model": model,
        "tokenizer": tokenizer,
        "n": args.n,
        "sampling_seed": args.seed,
        "extra": args.extra,
        "reference": f"Fashion-MNIST test split, {args.ref_n} images, {args.features} features "
        "(the table uses 5000 train images)",
        **{k: choice[k] for k in ("chosen", "flags", "sampling")},
        "points": points,
    }
    (out_dir / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{name}: chosen {summary['chosen']} (FID {choice['fid']:.2f})", file=sys.stderr)
    return summary


def run(args: argparse.Namespace) -> dict[str, Any]:
    default = common.WORK / "sweep" if args.smoke else ROOT / "results/fmnist/sweep"
    out_dir = Path(args.out_dir) if args.out_dir else default
    if args.model or args.name:
        if not (args.model and args.name and args.tokenizer):
            raise SystemExit("a sweep of your own needs --name, --model and --tokenizer")
        todo = {args.name: (args.model, args.tokenizer, args.grid)}
    else:
        rows = [r for r in args.rows.split(",") if r]
        if set(rows) - set(SWEEPS):
            raise SystemExit(
                f"unknown sweeps {sorted(set(rows) - set(SWEEPS))}; there are: {', '.join(SWEEPS)}"
            )
        todo = {r: (*SWEEPS[r][:2], args.grid or SWEEPS[r][2]) for r in rows}
    sweeps = {name: sweep(args, name, m, t, parse_grid(g), out_dir) for name, (m, t, g) in todo.items()}
    return {
        "out_dir": str(out_dir),
        "n": args.n,
        "features": args.features,
        "ref_n": args.ref_n,
        "sweeps": sweeps,
    }


def check(result: dict[str, Any]) -> None:
    """The smoke sweep: both points scored with their own CFG, the lowest FID chosen in every form."""
    (summary,) = result["sweeps"].values()
    points = summary["points"]
    assert [p["cfg"] for p in points] == [1.5, 3.5] and all(math.isfinite(p["fid"]) for p in points)
    best = min(points, key=lambda p: p["fid"])
    assert summary["chosen"] == {"cfg": best["cfg"]} and summary["flags"] == f"--cfg {best['cfg']}"
    assert summary["sampling"] == {"cfg_scale": best["cfg"]}
    folder = Path(result["out_dir"])
    for p in points:  # each point sampled with its own setting (the report records the sampler's)
        report = json.loads((folder / summary["name"] / f"cfg{p['cfg']}.json").read_text())
        assert report["generator"]["run"]["sampling"]["cfg_scale"] == p["cfg"] and report["fid"] == p["fid"]
    assert json.loads((folder / f"{summary['name']}.json").read_text()) == summary
