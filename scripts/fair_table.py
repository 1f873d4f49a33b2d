"""The README's "EAR vs raster (same backbone)" tables and learning-curve plot, from `scripts/fair_fmnist.sh`.

python scripts/fair_table.py [results/fmnist/fair]   -> markdown on stdout, <dir>/learning_curves.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from argen.eval.plot import plot_learning_curves
from argen.models.checkpoints import load_model

MODELS = {  # report prefix -> (label, run)
    "raster": ("raster (LlamaGen), no adaLN", "raster3_fmnist"),
    "raster_adaln": ("raster + adaLN", "raster_adaln3_fmnist"),
    "ear": ("EAR-31 (spiral, sides schedule, adaLN)", "ear3_fmnist"),
    "ear_any": ("any-schedule EAR at 31 passes (adaLN)", "ear_any3_fmnist"),
}


def read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def fid_pair(folder: Path, name: str) -> tuple[str, list[dict]]:
    reports = [r for s in (0, 1) if (r := read(folder / f"{name}_60k.seed{s}.eval.json"))]
    return " / ".join(f"{r['fid']:.1f}" for r in reports) or "-", reports


def seconds_per_image(folder: Path, bench: str, report: dict | None = None) -> str:
    """`argen bench` at batch 16 where it ran, else the eval's own sampling time per image (marked *)."""
    bench_report = read(folder / f"{bench}.bench.json")
    if bench_report:
        return f"{1 / bench_report['img_per_s']:.3f}"
    if report and report.get("generator", {}).get("sample_seconds"):
        return f"{report['generator']['sample_seconds'] / report['n']:.3f}*"
    return "-"


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "results/fmnist/fair")
    print(
        "| model (4 blocks x 128 wide) | parameters | images seen | passes | FID seed 0 / 1 | KID x1e3 | "
        "class acc. | s / image |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, (label, run) in MODELS.items():
        fids, reports = fid_pair(folder, name)
        model_file = Path("runs") / run / "model.safetensors"
        params = (
            f"{sum(p.numel() for p in load_model(model_file).parameters()) / 1e6:.2f}M"
            if model_file.is_file()
            else "-"
        )
        kid = " / ".join(f"{1e3 * r['kid_mean']:.1f}" for r in reports) or "-"
        acc = " / ".join(f"{100 * r['class_accuracy']:.1f}%" for r in reports) or "-"
        passes = str(reports[0]["generator"]["steps"]) if reports else "-"
        speed = seconds_per_image(folder, name, reports[0] if reports else None)
        print(f"| {label} | {params} | 60k | {passes} | {fids} | {kid} | {acc} | {speed} |")
    floor = next(
        (r["floor"]["fid"] for p in sorted(folder.glob("*.seed0.eval.json")) if (r := read(p))), None
    )
    print(
        f"\nN = 1000 samples per seed against 5000 train images; real-vs-real floor at N = 1000: "
        f"{floor:.2f}; * = the eval's own sampling seconds per image (batch 32, 2 threads, machine shared)"
        if floor
        else ""
    )
    print("\n| any-schedule EAR, passes | FID (N=1000, seed 0) | class acc. | s / image |")
    print("|---|---|---|---|")
    for passes in (256, 31, 16, 8):
        r = read(folder / f"ear_any_{passes}passes.eval.json")
        if r is None and passes == 31:  # the model's own schedule: its seed-0 row above
            r = read(folder / "ear_any_60k.seed0.eval.json")
        fid = f"{r['fid']:.1f}" if r else "-"
        acc = f"{100 * r['class_accuracy']:.1f}%" if r else "-"
        bench = "ear_any" if passes == 31 else f"ear_any_{passes}passes"
        print(f"| {passes} | {fid} | {acc} | {seconds_per_image(folder, bench, r)} |")
    curves: dict[str, list[tuple[float, float]]] = {}
    for name, (label, _) in MODELS.items():
        for path in sorted(folder.glob(f"{name}_*k.n250.eval.json")):
            k = path.name.removeprefix(f"{name}_").split("k.")[0]
            if k.isdigit():
                curves.setdefault(label, []).append((int(k) * 1000, read(path)["fid"]))
    if curves:
        n250 = read(next(folder.glob("*.n250.eval.json")))
        out = plot_learning_curves(
            curves,
            folder / "learning_curves.png",
            y_label="FID at N=250 (lower is better)",
            title="Same 4 x 128 backbone, same recipe: FID against images seen",
            floor=n250["floor"]["fid"],
        )
        print(f"\nplot: {out}")


if __name__ == "__main__":
    main()
