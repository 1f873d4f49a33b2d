"""The README results table and the quality-vs-speed plot, from `scripts/results_fmnist.sh` output.

python scripts/results_table.py [results/fmnist]   -> markdown on stdout, <dir>/quality_speed.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from argen.eval.plot import plot_quality_speed
from argen.models.checkpoints import read_meta

ROWS = {  # row -> (table label, plot label, group)
    "raster": ("raster, 256 steps", "raster 256", "raster"),
    "ear31": ("EAR, 31 steps (sides)", "EAR 31", "EAR"),
    "ear_any31": ("EAR any-schedule, 31 steps", "any 31", "EAR"),
    "ear_any16": ("EAR any-schedule, 16 steps", "any 16", "EAR"),
    "ear_any8": ("EAR any-schedule, 8 steps", "any 8", "EAR"),
    "var": ("VAR (dense teacher)", "VAR", "VAR"),
    "actvar": ("ActVAR, experts + tokens", "experts+tokens -19%", "ActVAR"),
    "actvar_fast": ("ActVAR, experts + tokens, lower budget", "experts+tokens -36%", "ActVAR"),
    "actvar_experts": ("ActVAR ablation: experts only", "experts only -19%", "ActVAR"),
    "actvar_tokens": ("ActVAR ablation: tokens only", "tokens only -20%", "ActVAR"),
}


def ablation(merged: list[dict]) -> None:
    """ActVAR against its dense teacher: FLOPs saved, relative FID/KID/accuracy change, CPU time saved."""
    teacher = next((r for r in merged if r["group"] == "VAR"), None)
    students = [r for r in merged if r["group"] == "ActVAR"]
    if teacher is None or not students:
        return
    print(
        "\n| ActVAR vs its VAR teacher | experts run (last 3 scales) | tokens kept (last 3 scales) "
        "| FLOPs saved | FID change | KID change | class acc. change | CPU time saved (b16) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in students:
        cfg = read_meta(r["generator"]["model"])["config"]
        rel = {k: 100 * (r[k] / teacher[k] - 1) for k in ("fid", "kid_mean", "class_accuracy")}
        print(
            f"| {r['name']} | {cfg['experts_k'][-1]} of {cfg['num_experts']} | {cfg['keep_ratio'][-1]:.0%} "
            f"| {100 * (1 - r['gflops'] / teacher['gflops']):.1f}% | {rel['fid']:+.1f}% "
            f"| {rel['kid_mean']:+.1f}% | {rel['class_accuracy']:+.1f}% "
            f"| {100 * (1 - teacher['img_per_s'] / r['img_per_s']):.1f}% |"
        )


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "results/fmnist")
    merged, floor = [], None
    for row, (label, short, group) in ROWS.items():
        ev, be = folder / f"{row}.eval.json", folder / f"{row}.bench.json"
        if not (ev.exists() and be.exists()):
            continue
        e, b = json.loads(ev.read_text()), json.loads(be.read_text())
        floor = floor or e["floor"]
        merged.append({**b, **e, "name": label, "short": short, "group": group, "img_per_s": b["img_per_s"]})
    if not merged:
        raise SystemExit(f"no results in {folder}: run scripts/results_fmnist.sh first")
    n = merged[0]["n"]
    print(
        f"| model | steps | forward tokens | GFLOPs/img | FID (N={n}) | KID x1e3 | class acc. "
        "| img/s CPU (b16) | s/img CPU (b1) | img/s GPU |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| real test images (floor) | | | | {floor['fid']:.2f} | {1e3 * floor['kid_mean']:.2f} "
        f"| {100 * floor['class_accuracy']:.1f}% | | | |"
    )
    for r in merged:
        print(
            f"| {r['name']} | {r['steps']} | {r['tokens']} | {r['gflops']:.3f} | {r['fid']:.2f} "
            f"| {1e3 * r['kid_mean']:.2f} | {100 * r['class_accuracy']:.1f}% | {r['img_per_s']:.1f} "
            f"| {r['latency_batch1_s']:.3f} | not measured |"
        )
    ablation(merged)
    png = plot_quality_speed(
        merged,
        folder / "quality_speed.png",
        label_key="short",
        floor=floor["fid"],
        title=f"Fashion-MNIST: FID at N={n} vs CPU img/s (1 thread, batch 16)",
    )
    print(f"\nplot: {png}", file=sys.stderr)


if __name__ == "__main__":
    main()
