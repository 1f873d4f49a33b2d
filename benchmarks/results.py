"""The README results table: every shipped Fashion-MNIST generator scored (FID/KID, class accuracy) and timed.

Each row is a shipped generator sampled with the settings its sweep chose (`<results>/sweep/<sweep>.json`,
`python -m benchmarks sweep`; scored there against a held-out test reference) and three parts run in turn:
  eval   `argen eval` at sampling seeds 0 and 1 against 5000 train images (Inception FID/KID at N samples,
         real-vs-real floor at N from the test split, the shipped classifier's class accuracy); writes
         `<row>.eval.json` (seed 0) and `<row>.seed1.eval.json`; a report that exists is kept (delete it to
         rerun).
  bench  `argen bench` at batch 1 and 16 (img/s and batch-1 latency, wall-clock); writes `<row>.bench.json`.
  table  the markdown tables of README.md and docs/05-benchmarks-results.md (printed, and in the report) and
         `<results>/quality_speed.png`, from the reports of the folder.
The actvar_short / actvar_tokens_short rows (a budget distilled 4x shorter, shipped before: git 74e7a9c and
d361845) are not shipped assets: the table shows their kept reports, eval and bench do not re-run them. The
earlier models' reports (first tokenizer pair) are in results/fmnist/earlier/. The ActVAR rows' CPU time saved
comes from the side-by-side timings under `--speed`.

python -m benchmarks results --threads 1 --part eval                 # every row, seeds 0 and 1, N=1000
python -m benchmarks results --threads 1 --part bench                # the README's timings: an idle machine
python -m benchmarks results --part table                            # the tables and the plot
python -m benchmarks results --part table --results results/fmnist/earlier
python -m benchmarks results --rows var,actvar --seeds 0 --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import common

ROOT = Path(__file__).resolve().parents[1]
# the smoke run's folder is made under benchmarks.common.WORK (read when it runs: tests move it)
SMOKE = ["--rows", "var,actvar", "--n", "4", "--ref-n", "64", "--features", "classifier"]
SMOKE += ["--batch-sizes", "1,2", "--repeats", "1"]


@dataclass(frozen=True)
class Row:
    label: str  # in the table
    short: str  # in the plot
    group: str
    model: str  # shipped asset (for the earlier rows: the shipped one of the same budget, for its config)
    tokenizer: str
    sweep: str  # whose chosen settings it samples with
    options: tuple[str, ...] = ()  # further sampler options
    rerun: bool = True  # False: an earlier model, its reports kept, not re-run


_VAR = (
    "msvq2_fmnist",
    "var",
)  # the ActVARs sample with their teacher's settings (distillation fits them to it)
ROWS = {
    "raster": Row("raster, 256 steps", "raster 256", "raster", "raster_fmnist", "vq2_fmnist", "raster"),
    "ear31": Row("EAR, 31 steps (sides)", "EAR 31", "EAR", "ear_fmnist", "vq2_fmnist", "ear31"),
    # any-schedule EAR samples with the settings chosen for EAR-31 (same network, fine-tuned; one sweep less)
    "ear_any31": Row("EAR any-schedule, 31 steps", "any 31", "EAR", "ear_any_fmnist", "vq2_fmnist", "ear31"),
    "ear_any16": Row(
        "EAR any-schedule, 16 steps",
        "any 16",
        "EAR",
        "ear_any_fmnist",
        "vq2_fmnist",
        "ear31",
        ("--schedule", "16"),
    ),
    "ear_any8": Row(
        "EAR any-schedule, 8 steps",
        "any 8",
        "EAR",
        "ear_any_fmnist",
        "vq2_fmnist",
        "ear31",
        ("--schedule", "8"),
    ),
    "var": Row("VAR (dense teacher)", "VAR", "VAR", "var_fmnist", *_VAR),
    "actvar": Row("ActVAR, experts + tokens", "experts+tokens -19%", "ActVAR", "actvar_fmnist", *_VAR),
    "actvar_short": Row(
        "ActVAR, experts + tokens, 4x shorter distillation",
        "experts+tokens, short",
        "ActVAR",
        "actvar_fmnist",
        *_VAR,
        rerun=False,
    ),
    "actvar_fast": Row(
        "ActVAR, experts + tokens, lower budget", "experts+tokens -36%", "ActVAR", "actvar_fast_fmnist", *_VAR
    ),
    "actvar_experts": Row(
        "ActVAR ablation: experts only", "experts only -19%", "ActVAR", "actvar_experts_fmnist", *_VAR
    ),
    "actvar_tokens": Row(
        "ActVAR ablation: tokens only", "tokens only -20%", "ActVAR", "actvar_tokens_fmnist", *_VAR
    ),
    "actvar_tokens_short": Row(
        "ActVAR ablation: tokens only, 4x shorter distillation",
        "tokens only, short",
        "ActVAR",
        "actvar_tokens_fmnist",
        *_VAR,
        rerun=False,
    ),
}
# (row, row it is compared with) in the table of mean FIDs
PAIRS = [
    ("ear31", "raster"),
    ("ear_any31", "ear31"),
    ("ear_any16", "ear_any31"),
    ("ear_any8", "ear_any31"),
    ("actvar", "actvar_short"),
    ("actvar_tokens", "actvar_tokens_short"),
]
# ActVAR rows -> their side-by-side CPU-time comparison with the teacher (`--speed` folder, batch 16)
SPEED_FILES = {
    "actvar": "fmnist_main_b16",
    "actvar_fast": "fmnist_fast_b16",
    "actvar_experts": "fmnist_experts_b16",
    "actvar_tokens": "fmnist_tokens_b16",
}


def _names(text: str) -> list[str]:
    names = [v for v in text.split(",") if v]
    unknown = sorted(set(names) - set(ROWS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown rows {unknown}; there are: {', '.join(ROWS)}")
    return names


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--part", choices=("eval", "bench", "table", "all"), default="all", help="(default: all)")
    p.add_argument("--results", help="report folder (default: results/fmnist; smoke: a work folder)")
    p.add_argument("--rows", type=_names, default=list(ROWS), help="comma-separated rows (default: all)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=1000, help="images sampled and scored per seed")
    p.add_argument("--seeds", default="0,1", help="sampling seeds scored (default: 0,1)")
    p.add_argument("--ref-n", type=int, default=5000, help="train images of the reference")
    p.add_argument(
        "--features", default="inception", help="inception (FID) or classifier (cheap, NON-standard)"
    )
    p.add_argument("--batch-sizes", default="1,16", help="bench batch sizes (default: 1,16)")
    p.add_argument("--repeats", type=int, default=3, help="bench timed runs per batch size")
    p.add_argument(
        "--speed", default=str(ROOT / "results/cpu/actvar_speed/s5"), help="ActVAR side-by-side runs"
    )


def _folder(args: argparse.Namespace) -> Path:
    if args.results:
        return Path(args.results)
    return common.WORK / "results" if args.smoke else ROOT / "results/fmnist"


def chosen(folder: Path, sweep: str) -> list[str]:
    """The sampler flags a sweep chose (none when the sweep has not run)."""
    path = folder / "sweep" / f"{sweep}.json"
    return json.loads(path.read_text())["flags"].split() if path.is_file() else []


def eval_path(folder: Path, name: str, seed: int) -> Path:
    return folder / (f"{name}.eval.json" if seed == 0 else f"{name}.seed{seed}.eval.json")


def measure(args: argparse.Namespace, folder: Path) -> dict[str, list[str]]:
    """The eval and bench parts: `argen eval` / `argen bench` of every chosen row (reports kept)."""
    from argen.cli import main

    done: dict[str, list[str]] = {"evaluated": [], "kept": [], "benched": []}
    for name in args.rows:
        row = ROWS[name]
        if not row.rerun:
            continue
        flags = ["--model", row.model, "--tokenizer", row.tokenizer, "--device", args.device]
        flags += [*row.options, *chosen(folder, row.sweep)]
        for seed in [int(s) for s in args.seeds.split(",")] if args.part in ("eval", "all") else []:
            out = eval_path(folder, name, seed)
            if out.exists():
                done["kept"].append(str(out))
                continue
            sets = [f"ref_n={args.ref_n}", f"features={args.features}", f"out={out}"]
            main(
                [
                    "eval",
                    *flags,
                    "--n",
                    str(args.n),
                    "--seed",
                    str(seed),
                    *[a for s in sets for a in ("--set", s)],
                ]
            )
            done["evaluated"].append(str(out))
        if args.part in ("bench", "all"):
            out = folder / f"{name}.bench.json"
            timing = ["--batch-sizes", args.batch_sizes, "--repeats", str(args.repeats)]
            main(["bench", *flags, *timing, "--name", name, "--out", str(out)])
            done["benched"].append(str(out))
    return done


# ------------------------------------------------------------------------------------------------ table
def beyond(a: dict, b: dict) -> str:
    """Whether two rows' mean FIDs differ by more than the larger of their seed spreads."""
    fa, fb = a["seeds"]["fid"], b["seeds"]["fid"]
    if len(fa) < 2 or len(fb) < 2:
        return "one seed only"
    spread = max(max(fa) - min(fa), max(fb) - min(fb))
    gap = abs(a["fid"] - b["fid"])
    return f"{'yes' if gap > spread else 'no'} (FID gap {gap:.2f}, spread {spread:.2f})"


def time_saved(speed: Path, name: str) -> str:
    """CPU time saved against the teacher, process time, calls alternating (not the bench's wall-clock); the
    median over repeated runs (NAME.json, NAME_run2.json, ...) with their range when there are several."""
    stem = SPEED_FILES.get(name, "-")
    runs = [speed / f"{stem}.json", *sorted(speed.glob(f"{stem}_run*.json"))]
    cuts = sorted(1 - json.loads(p.read_text())["time_ratio"] for p in runs if p.is_file())
    if not cuts:
        return "not measured" if ROWS[name].rerun else "as the shipped one (same budget)"
    if len(cuts) == 1:
        return f"{100 * cuts[0]:.1f}%"
    low, mid, high = 100 * cuts[0], 100 * statistics.median(cuts), 100 * cuts[-1]
    return f"{mid:.1f}% (median of {len(cuts)} runs, {low:.1f}-{high:.1f}%)"


def ablation(merged: list[dict], speed: Path) -> list[str]:
    """ActVAR against its dense teacher: FLOPs saved, relative FID/KID/accuracy change, CPU time saved."""
    from argen.models.checkpoints import ASSETS, read_meta

    teacher = next((r for r in merged if r["group"] == "VAR"), None)
    students = [r for r in merged if r["group"] == "ActVAR"]
    if teacher is None or not students:
        return []
    lines = [
        "",
        "| ActVAR vs its VAR teacher | experts run (last 3 scales) | tokens kept (last 3 scales) "
        "| FLOPs saved | FID change | KID change | class acc. change | beyond the seed spread? "
        "| CPU time saved (b16, side by side) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in students:
        # the shipped model of the row's budget (an earlier row's own file may be gone: same config)
        cfg = read_meta(ASSETS / ROWS[r["row"]].model)["config"]
        rel = {k: 100 * (r[k] / teacher[k] - 1) for k in ("fid", "kid_mean", "class_accuracy")}
        lines.append(
            f"| {r['name']} | {cfg['experts_k'][-1]} of {cfg['num_experts']} | {cfg['keep_ratio'][-1]:.0%} "
            f"| {100 * (1 - r['gflops'] / teacher['gflops']):.1f}% | {rel['fid']:+.1f}% "
            f"| {rel['kid_mean']:+.1f}% | {rel['class_accuracy']:+.1f}% | {beyond(r, teacher)} "
            f"| {time_saved(speed, r['row'])} |"
        )
    return lines


def settings(e: dict) -> str:
    """The sampling settings a row used (recorded by `argen eval` in generator.run)."""
    run = e.get("generator", {}).get("run")
    if not run:
        return "model defaults"
    s = run["sampling"]
    out = [f"CFG {s['cfg_scale']:g}" + (" linear" if s["cfg_schedule"] == "linear" else "")]
    out += [f"T {s['temperature']:g}"] if s["temperature"] != 1 else []
    out += [f"top-k {s['top_k']}"] if s["top_k"] else []
    out += [f"top-p {s['top_p']:g}"] if s["top_p"] < 1 else []
    return ", ".join(out)


def merge(folder: Path) -> list[dict[str, Any]]:
    """Every row with both reports: bench and eval fields, per-seed metrics (seed 0 first) and their means."""
    merged = []
    for name, row in ROWS.items():
        ev, be = folder / f"{name}.eval.json", folder / f"{name}.bench.json"
        if not (ev.exists() and be.exists()):
            continue
        e, b = json.loads(ev.read_text()), json.loads(be.read_text())
        reports = [e] + [json.loads(p.read_text()) for p in sorted(folder.glob(f"{name}.seed*.eval.json"))]
        per_seed = {k: [r[k] for r in reports] for k in ("fid", "kid_mean", "class_accuracy")}
        means = {k: sum(v) / len(v) for k, v in per_seed.items()}
        gpu = folder / "gpu" / f"{name}.bench.json"  # `--part bench --device cuda --results <folder>/gpu`
        gpu_img_per_s = json.loads(gpu.read_text())["img_per_s"] if gpu.exists() else None
        merged.append(
            {**b, **e, **means, "seeds": per_seed, "settings": settings(e), "row": name}
            | {"name": row.label, "short": row.short, "group": row.group, "img_per_s": b["img_per_s"]}
            | {"gpu_img_per_s": gpu_img_per_s}
        )
    return merged


def mark(r: dict[str, Any]) -> str:
    """† on the timings of rows `bench` does not re-run (models no longer shipped)."""
    return "" if ROWS[r["row"]].rerun else " †"


def _two(values: list[float], fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in values)


def table(folder: Path, speed: Path) -> dict[str, Any]:
    """The markdown tables and the quality-vs-speed plot of the reports in `folder`."""
    from argen.eval.plot import plot_quality_speed

    merged = merge(folder)
    if not merged:
        raise SystemExit(
            f"no results in {folder}: run `python -m benchmarks results --part eval` (and bench)"
        )
    n, floor = merged[0]["n"], merged[0]["floor"]
    lines = [
        f"| model | sampling | steps | GFLOPs/img | FID (N={n}), seeds 0 / 1 | KID x1e3 | class acc. "
        "| img/s CPU (b16) | s/img CPU (b1) | img/s GPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| real test images (floor) | | | | {floor['fid']:.2f} | {1e3 * floor['kid_mean']:.2f} "
        f"| {100 * floor['class_accuracy']:.1f}% | | | |",
    ]
    for r in merged:
        sd = r["seeds"]
        lines.append(
            f"| {r['name']} | {r['settings']} | {r['steps']} | {r['gflops']:.3f} | {_two(sd['fid'], '.2f')} "
            f"| {_two([1e3 * k for k in sd['kid_mean']], '.2f')} "
            f"| {_two([100 * a for a in sd['class_accuracy']], '.1f')}% | {r['img_per_s']:.1f}{mark(r)} "
            f"| {r['latency_batch1_s']:.3f}{mark(r)} | "
            + (f"{r['gpu_img_per_s']:.0f} |" if r["gpu_img_per_s"] else "not measured |")
        )
    if any(mark(r) for r in merged):
        lines += [
            "",
            "† timed when it was shipped, on the machine of that session (`bench` does not re-run the rows "
            "of models no longer shipped): compare these only with each other.",
        ]
    spreads = [max(r["seeds"]["fid"]) - min(r["seeds"]["fid"]) for r in merged if len(r["seeds"]["fid"]) > 1]
    if spreads:
        lines += [
            "",
            f"FID spread between the two sampling seeds: {min(spreads):.2f} to {max(spreads):.2f} "
            f"(median {sorted(spreads)[len(spreads) // 2]:.2f}); columns list seed 0 / seed 1, the mean is "
            "compared below.",
        ]
    by_row = {r["row"]: r for r in merged}
    pairs = [(by_row[a], by_row[b]) for a, b in PAIRS if a in by_row and b in by_row]
    if pairs:
        lines += ["", "| comparison | mean FID | differs beyond the seed spread? |", "|---|---|---|"]
        lines += [
            f"| {a['name']} vs {b['name']} | {a['fid']:.2f} vs {b['fid']:.2f} | {beyond(a, b)} |"
            for a, b in pairs
        ]
    lines += ablation(merged, speed)
    png = plot_quality_speed(
        merged,
        folder / "quality_speed.png",
        label_key="short",
        floor=floor["fid"],
        title=f"Fashion-MNIST: FID at N={n} vs CPU img/s (1 thread, batch 16)",
    )
    keys = ("fid", "kid_mean", "class_accuracy", "gflops", "steps", "img_per_s", "latency_batch1_s")
    return {
        "markdown": "\n".join(lines) + "\n",
        "rows": {r["row"]: {"seeds": r["seeds"], **{k: r[k] for k in keys}} for r in merged},
        "floor_fid": floor["fid"],
        "plot": str(png),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    folder = _folder(args)
    folder.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"results": str(folder), "part": args.part, "rows": args.rows}
    result["settings"] = {k: getattr(args, k) for k in ("device", "n", "seeds", "ref_n", "features")}
    result["bench"] = {"batch_sizes": args.batch_sizes, "repeats": args.repeats, "timed": "wall-clock"}
    if args.part != "table":
        result.update(measure(args, folder))
    if args.part in ("table", "all"):
        result["table"] = table(folder, Path(args.speed))
        print(result["table"]["markdown"], file=sys.stderr)
    return result


def check(result: dict[str, Any]) -> None:
    """The smoke run (var and actvar, seeds 0 and 1): every report written, the table says what they hold."""
    folder = Path(result["results"])
    assert len(result["evaluated"]) == 4 and not result["kept"] and len(result["benched"]) == 2
    rows, md = result["table"]["rows"], result["table"]["markdown"]
    assert list(rows) == ["var", "actvar"]
    for name, r in rows.items():
        report = json.loads((folder / f"{name}.seed1.eval.json").read_text())
        assert r["seeds"]["fid"][1] == report["fid"] and len(r["seeds"]["fid"]) == 2
        assert math.isclose(r["fid"], sum(r["seeds"]["fid"]) / 2)
        assert all(math.isfinite(v) for v in r["seeds"]["fid"]) and r["img_per_s"] > 0 and r["steps"] == 10
        fid = " / ".join(f"{v:.2f}" for v in r["seeds"]["fid"])
        assert f"| {ROWS[name].label} | " in md and f"| {r['gflops']:.3f} | {fid} |" in md
    saved = 100 * (1 - rows["actvar"]["gflops"] / rows["var"]["gflops"])
    assert f"| ActVAR, experts + tokens | 12 of 16 | 80% | {saved:.1f}% |" in md and 15 < saved < 25
    assert Path(result["table"]["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
