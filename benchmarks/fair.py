"""EAR against raster by the paper's protocol: one backbone, one recipe, equal images seen (issue 27).

The four runs of `bash scripts/train_fmnist.sh f` and `g` share one 4 x 128 backbone (4 heads), AdamW at lr
2e-3 with cosine decay, EMA 0.995, batch 32 and 60k training images: raster (LlamaGen, no adaLN), raster +
adaLN, EAR-31 (spiral, sides schedule, adaLN) and any-schedule EAR (EAR-31's 36k-image state trained 24k
images more on random partitions). Every model samples at CFG 2.5 (what the earlier sweeps chose for both
raster and EAR) and is scored against 5000 train images (Inception FID/KID, the shipped classifier's class
accuracy).
Parts (a report that exists is kept; delete it to rerun):
  curve     training checkpoints exported (`argen export`) at --steps and scored at N=--n-curve, seed 0, with
            the final models at the same N: FID against images seen
  final     the 60k models at N=--n, seeds --seeds
  ablation  any-schedule EAR at 256 passes (one token per pass, spiral order), 16 and 8 (31: its final row)
  bench     seconds per image at batch 16 (`argen bench`), every model and schedule; needs an idle machine
  table     the README's tables (markdown, printed and in the report) and <results>/learning_curves.png

python -m benchmarks fair --threads 1 --part final,ablation             # ~1 h on one idle core
python -m benchmarks fair --threads 1 --part curve --steps 375,1125       # 12k and 36k images
python -m benchmarks fair --threads 1 --part bench
python -m benchmarks fair --part table
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from benchmarks import common

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("curve", "final", "ablation", "bench", "table")
MODELS = {  # report prefix -> (label, run folder name)
    "raster": ("raster (LlamaGen), no adaLN", "raster3_fmnist"),
    "raster_adaln": ("raster + adaLN", "raster_adaln3_fmnist"),
    "ear": ("EAR-31 (spiral, sides schedule, adaLN)", "ear3_fmnist"),
    "ear_any": ("any-schedule EAR at 31 passes (adaLN)", "ear_any3_fmnist"),
}
ABLATION_PASSES = (256, 16, 8)  # 31 is the model's own schedule: its final seed-0 report
SMOKE = ["--n", "8", "--n-curve", "8", "--ref-n", "64", "--features", "classifier", "--seeds", "0,1"]
SMOKE += ["--steps", "1", "--batch-sizes", "2", "--repeats", "1", "--ablation-passes", "16,4"]


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--part", default="curve,final,ablation,bench,table", help=f"comma-separated: {PARTS}")
    p.add_argument("--results", help="report folder (default: results/fmnist/fair)")
    p.add_argument("--runs", help="folder of the four training runs (default: runs)")
    p.add_argument(
        "--steps", default="375,1125", help="curve: checkpoint steps of each run (EAR-any: its own)"
    )
    p.add_argument("--n", type=int, default=1000, help="final and ablation: samples per report")
    p.add_argument("--n-curve", type=int, default=250, help="curve: samples per point")
    p.add_argument("--seeds", default="0,1", help="final: sampling seeds")
    p.add_argument("--ref-n", type=int, default=5000, help="train images of the FID reference")
    p.add_argument("--features", default="inception", help="inception (FID) | classifier (smoke)")
    p.add_argument("--cfg", type=float, default=2.5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--tokenizer", default="", help="default: the one each model records")
    p.add_argument("--ablation-passes", default=",".join(map(str, ABLATION_PASSES)))
    p.add_argument("--batch-sizes", default="16", help="bench")
    p.add_argument("--repeats", type=int, default=3, help="bench")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def _run_info(run: Path) -> dict[str, Any]:
    """Batch size and the step a run was forked at (its `init` checkpoint; 0 for a run from scratch)."""
    cfg = json.loads((run / "config.json").read_text())
    fork = re.search(r"step_(\d+)", str(cfg.get("init") or ""))
    return {"batch": cfg["batch_size"], "offset": int(fork.group(1)) if fork else 0, "init": cfg.get("init")}


def _eval(model: Path, out: Path, n: int, seed: int, args: argparse.Namespace, *extra: str) -> str:
    from argen.cli import main

    if out.exists():
        return "kept"
    sets = [f"ref_n={args.ref_n}", f"features={args.features}", f"out={out}"]
    argv = ["eval", "--model", str(model), "--n", str(n), "--device", args.device, "--seed", str(seed)]
    argv += ["--cfg", str(args.cfg), *extra, *[a for s in sets for a in ("--set", s)]]
    argv += ["--tokenizer", args.tokenizer] if args.tokenizer else []
    main(argv)
    return "scored"


def curve(args: argparse.Namespace, runs: Path, folder: Path) -> dict[str, str]:
    from argen.cli import main

    exported = runs / "fair"  # checkpoints as model files (beside the runs: not results)
    done: dict[str, str] = {}
    for name, (_, run_name) in MODELS.items():
        run = runs / run_name
        info = _run_info(run)
        for step in [] if name == "ear_any" else _ints(args.steps):  # EAR-any's early points are EAR's
            k = _seen((step + info["offset"]) * info["batch"])
            model = exported / f"{name}_{k}.safetensors"
            if not model.exists():
                main(["export", "--checkpoint", str(run / "checkpoints" / f"step_{step:08d}"), "--out",
                      str(model.with_suffix(""))])  # fmt: skip
            out = folder / f"{name}_{k}.n{args.n_curve}.eval.json"
            done[out.name] = _eval(model, out, args.n_curve, 0, args)
        out = folder / f"{name}_{_seen(_images_seen(run))}.n{args.n_curve}.eval.json"
        done[out.name] = _eval(run / "model.safetensors", out, args.n_curve, 0, args)
    return done


def _seen(images: int) -> str:
    """A report name's images-seen part: 12000 -> "12k" (whole thousands), else the number."""
    return f"{images // 1000}k" if images % 1000 == 0 else str(images)


def _unseen(label: str) -> int:
    return int(label[:-1]) * 1000 if label.endswith("k") else int(label)


def _images_seen(run: Path) -> int:
    """Training images the run's final model saw (its own steps, plus the steps of the run it forked from)."""
    cfg = json.loads((run / "config.json").read_text())
    info = _run_info(run)
    return (cfg["steps"] + info["offset"]) * info["batch"]


def final(args: argparse.Namespace, runs: Path, folder: Path) -> dict[str, str]:
    done = {}
    for name, (_, run_name) in MODELS.items():
        run = runs / run_name
        k = _seen(_images_seen(run))
        for seed in _ints(args.seeds):
            out = folder / f"{name}_{k}.seed{seed}.eval.json"
            done[out.name] = _eval(run / "model.safetensors", out, args.n, seed, args)
    return done


def ablation(args: argparse.Namespace, runs: Path, folder: Path) -> dict[str, str]:
    done = {}
    for passes in _ints(args.ablation_passes):
        out = folder / f"ear_any_{passes}passes.eval.json"
        model = runs / MODELS["ear_any"][1] / "model.safetensors"
        done[out.name] = _eval(model, out, args.n, 0, args, "--schedule", str(passes))
    return done


def bench(args: argparse.Namespace, runs: Path, folder: Path) -> dict[str, str]:
    from argen.cli import main

    done = {}
    rows = [(name, run_name, None) for name, (_, run_name) in MODELS.items()]
    rows += [(f"ear_any_{p}passes", MODELS["ear_any"][1], p) for p in _ints(args.ablation_passes)]
    for name, run_name, passes in rows:
        out = folder / f"{name}.bench.json"
        argv = ["bench", "--model", str(runs / run_name / "model.safetensors"), "--device", args.device]
        argv += ["--cfg", str(args.cfg), "--batch-sizes", args.batch_sizes, "--repeats", str(args.repeats)]
        argv += ["--name", name, "--out", str(out)] + (["--schedule", str(passes)] if passes else [])
        argv += ["--tokenizer", args.tokenizer] if args.tokenizer else []
        main(argv)
        done[out.name] = "timed"
    return done


# ------------------------------------------------------------------------------------------------- table
def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _seconds_per_image(folder: Path, bench_name: str) -> float | None:
    rep = _read(folder / f"{bench_name}.bench.json")
    return 1 / rep["img_per_s"] if rep else None


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(args: argparse.Namespace, runs: Path, folder: Path) -> dict[str, Any]:
    from argen.eval.plot import plot_learning_curves
    from argen.models.checkpoints import load_model

    seeds = _ints(args.seeds)
    lines = [
        "| model (4 blocks x 128 wide) | parameters | images seen | passes | FID " + " / ".join(
            f"seed {s}" for s in seeds) + " | KID x1e3 | precision / recall | class acc. | s / image |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    rows: dict[str, dict[str, Any]] = {}
    for name, (label, run_name) in MODELS.items():
        run = runs / run_name
        images = _images_seen(run) if (run / "config.json").is_file() else 60_000
        k = _seen(images)
        reports = [r for s in seeds if (r := _read(folder / f"{name}_{k}.seed{s}.eval.json"))]
        model_file = run / "model.safetensors"
        params = sum(p.numel() for p in load_model(model_file).parameters()) if model_file.is_file() else None
        row = {
            "fid": [r["fid"] for r in reports],
            "kid": [r["kid_mean"] for r in reports],
            "precision": [r.get("precision") for r in reports],
            "recall": [r.get("recall") for r in reports],
            "class_accuracy": [r.get("class_accuracy") for r in reports],
            "passes": reports[0]["generator"]["steps"] if reports else None,
            "params": params,
            "images_seen": images,
            "s_per_image": _seconds_per_image(folder, name),
        }
        rows[name] = row

        def both(key: str, spec: str, scale: float = 1.0, row: dict = row) -> str:
            vals = [v for v in row[key] if v is not None]
            return " / ".join(format(scale * v, spec) for v in vals) or "-"

        pr = " / ".join(
            f"{p:.2f}, {r:.2f}" for p, r in zip(row["precision"], row["recall"], strict=True) if p is not None
        )
        lines.append(
            f"| {label} | {_fmt(params and params / 1e6, '.2f')}M | {k} | {_fmt(row['passes'], 'd')} | "
            f"{both('fid', '.1f')} | {both('kid', '.1f', 1e3)} | {pr or '-'} | "
            f"{both('class_accuracy', '.1f', 100)}% | {_fmt(row['s_per_image'], '.3f')} |"
        )
    floor = next(
        (r["floor"]["fid"] for p in sorted(folder.glob("*.seed0.eval.json")) if (r := _read(p))), None
    )
    if floor is not None:
        lines.append(
            f"\nN = {args.n} samples per seed against {args.ref_n} train images; real-vs-real floor at "
            f"N = {args.n}: {floor:.2f}. s / image: `argen bench` at batch {args.batch_sizes}, "
            "CFG on, bf16 where the CPU has bf16 units."
        )
    lines += ["", f"| any-schedule EAR, passes | FID (N={args.n}, seed 0) | class acc. | s / image |",
              "|---|---|---|---|"]  # fmt: skip
    ablation_rows: dict[int, dict[str, Any]] = {}
    k_any = _seen(rows["ear_any"]["images_seen"])
    for passes in sorted({*_ints(args.ablation_passes), 31}, reverse=True):
        r = _read(folder / f"ear_any_{passes}passes.eval.json")
        if r is None and passes == 31:
            r = _read(folder / f"ear_any_{k_any}.seed0.eval.json")
        bench_name = "ear_any" if passes == 31 else f"ear_any_{passes}passes"
        row = {
            "fid": r and r["fid"],
            "class_accuracy": r and r.get("class_accuracy"),
            "s_per_image": _seconds_per_image(folder, bench_name),
        }
        ablation_rows[passes] = row
        acc = _fmt(row["class_accuracy"] and 100 * row["class_accuracy"], ".1f")
        lines.append(f"| {passes} | {_fmt(row['fid'], '.1f')} | {acc}% | {_fmt(row['s_per_image'], '.3f')} |")
    raster = _read(folder / f"raster_{_seen(rows['raster']['images_seen'])}.seed0.eval.json")
    if raster:
        lines.append(
            f"| raster, 256 (same budget) | {raster['fid']:.1f} | {100 * raster['class_accuracy']:.1f}% | "
            f"{_fmt(_seconds_per_image(folder, 'raster'), '.3f')} |"
        )
    # learning curves: FID at N=n_curve against images seen; EAR-any continues EAR's curve from its fork
    curves: dict[str, list[tuple[float, float]]] = {}
    accuracy: dict[str, list[tuple[float, float]]] = {}
    pattern = re.compile(rf"^(?P<name>.+)_(?P<k>\d+k?)\.n{args.n_curve}\.eval\.json$")
    for path in sorted(folder.glob(f"*.n{args.n_curve}.eval.json")):
        m = pattern.match(path.name)
        if m and m["name"] in MODELS:
            report = _read(path)
            curves.setdefault(m["name"], []).append((_unseen(m["k"]), report["fid"]))
            accuracy.setdefault(m["name"], []).append((_unseen(m["k"]), 100 * report["class_accuracy"]))
    if "ear_any" in curves and "ear" in curves:  # any-schedule EAR continues EAR-31's run from its fork
        fork = _run_info(runs / MODELS["ear_any"][1])
        fork_images = fork["offset"] * fork["batch"]
        for both in (curves, accuracy):
            both["ear_any"] += [pt for pt in both["ear"] if pt[0] == fork_images]
    plots = []
    if curves:
        floor = _read(next(folder.glob(f"*.n{args.n_curve}.eval.json")))["floor"]
        title = "Same 4 x 128 backbone, same recipe"
        for values, png, y_label, floor_value in (
            (curves, "learning_curves.png", "FID (lower is better)", floor["fid"]),
            (accuracy, "learning_curves_class_accuracy.png", "class accuracy, % (higher is better)",
             100 * floor["class_accuracy"] if floor.get("class_accuracy") else None),
        ):  # fmt: skip
            plots.append(
                plot_learning_curves(
                    {MODELS[k][0]: sorted(v) for k, v in values.items()},
                    folder / png,
                    y_label=f"{y_label.split(' (')[0]} at N={args.n_curve} ({y_label.split(' (')[1]}",
                    title=f"{title}: {y_label.split(' (')[0]} against images seen",
                    floor=floor_value,
                )
            )
    return {
        "markdown": "\n".join(lines),
        "rows": rows,
        "ablation": ablation_rows,
        "curves": curves,
        "class_accuracy_curves": accuracy,
        "plots": [str(p) for p in plots],
    }


# --------------------------------------------------------------------------------------------- smoke runs
def _smoke_runs(work: Path) -> Path:
    """Four tiny runs shaped like the real ones (2 steps, a checkpoint each step; EAR-any forked from EAR's
    step 1), on random codes, with a random 1-channel VQ of their vocabulary as their tokenizer."""
    import numpy as np

    from argen.cli import main

    runs = work / "fair_runs"
    if (runs / "ear_any3_fmnist" / "model.safetensors").exists():
        return runs
    tok = common.random_model("tokenizer", "debug", work, in_channels=1, out_channels=1, codebook_size=64)
    rng = np.random.RandomState(0)
    codes = work / "fair_codes.npz"
    np.savez(codes, codes=rng.randint(0, 64, (16, 256)), labels=rng.randint(0, 10, (16,)))
    common_sets = [f"data.root={codes}", "data.source=tokens", "model.grid=16", "batch_size=4", "device=cpu",
                   "ckpt_every=1", "log_every=1"]  # fmt: skip
    specs = {
        "raster3_fmnist": ["model.preset=debug_raster", "steps=2"],
        "raster_adaln3_fmnist": ["model.preset=debug_raster", "model.adaln=true", "steps=2"],
        "ear3_fmnist": ["model.preset=debug", "steps=2"],
        "ear_any3_fmnist": [
            "model.preset=debug",
            "steps=2",
            "objective.randomize=true",
            f"init={runs / 'ear3_fmnist' / 'checkpoints' / 'step_00000001'}",
        ],
    }
    for run, sets in specs.items():
        argv = ["train", "gpt"]
        for s in [*common_sets, *sets, f"out_dir={runs / run}"]:
            argv += ["--set", s]
        main(argv)
    (runs / "tokenizer.txt").write_text(tok)
    return runs


def run(args: argparse.Namespace) -> dict[str, Any]:
    parts = [p for p in args.part.split(",") if p]
    if unknown := sorted(set(parts) - set(PARTS)):
        raise SystemExit(f"unknown part(s) {unknown}: choose from {', '.join(PARTS)}")
    if args.smoke:
        runs = Path(args.runs) if args.runs else _smoke_runs(common.WORK)
        args.tokenizer = args.tokenizer or (runs / "tokenizer.txt").read_text()
        folder = Path(args.results) if args.results else common.WORK / "fair_results"
    else:
        runs = Path(args.runs or ROOT / "runs")
        folder = Path(args.results or ROOT / "results/fmnist/fair")
    missing = [r for _, r in MODELS.values() if not (runs / r / "model.safetensors").exists()]
    if missing and set(parts) - {"table"}:
        raise SystemExit(
            f"no trained model in {', '.join(str(runs / m) for m in missing)}: train them first "
            "(bash scripts/train_fmnist.sh f and g; ~2 h on 2 idle cores)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"results": str(folder), "runs": str(runs), "parts": parts}
    result["settings"] = {k: getattr(args, k) for k in ("n", "n_curve", "seeds", "ref_n", "features", "cfg")}
    for part in parts:
        result[part] = globals()[part](args, runs, folder)
    if "table" in parts:
        print(result["table"]["markdown"], file=sys.stderr)
    return result


def check(result: dict[str, Any]) -> None:
    """The smoke run: every report written and read back into the table and the curves."""
    assert set(result["final"].values()) == {"scored"} and len(result["final"]) == 8, result["final"]
    assert len(result["curve"]) == 7, result["curve"]
    assert len(result["ablation"]) == 2 and len(result["bench"]) == 6
    tab = result["table"]
    for name, row in tab["rows"].items():
        assert len(row["fid"]) == 2 and all(v == v for v in row["fid"]), name
        assert row["s_per_image"] > 0 and row["params"] > 0
    assert tab["rows"]["raster"]["passes"] == 256 and tab["rows"]["ear"]["passes"] == 31
    assert tab["rows"]["ear_any"]["images_seen"] == 4 * (2 + 1)  # forked at EAR's step 1
    assert tab["ablation"][16]["fid"] is not None and tab["ablation"][4]["s_per_image"] > 0
    assert len(tab["curves"]["ear_any"]) == 2  # its fork point (EAR's) and its own final point
    assert len(tab["plots"]) == 2
    assert all(Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in tab["plots"])
