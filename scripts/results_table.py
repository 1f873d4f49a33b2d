"""The README results table and the quality-vs-speed plot, from `scripts/results_fmnist.sh` output.

python scripts/results_table.py [results/fmnist]   -> markdown on stdout, <dir>/quality_speed.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from argen.eval.plot import plot_quality_speed

ROWS = {  # row -> (label, group)
    "raster": ("raster, 256 steps", "raster"),
    "ear31": ("EAR, 31 steps (sides)", "EAR"),
    "ear_any31": ("EAR any-schedule, 31 steps", "EAR"),
    "ear_any16": ("EAR any-schedule, 16 steps", "EAR"),
    "ear_any8": ("EAR any-schedule, 8 steps", "EAR"),
    "var": ("VAR (dense teacher)", "VAR"),
    "actvar": ("ActVAR, experts + tokens", "ActVAR"),
    "actvar_fast": ("ActVAR, experts + tokens, lower budget", "ActVAR"),
    "actvar_experts": ("ActVAR ablation: experts only", "ActVAR"),
    "actvar_tokens": ("ActVAR ablation: tokens only", "ActVAR"),
}


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "results/fmnist")
    merged, floor = [], None
    for row, (label, group) in ROWS.items():
        ev, be = folder / f"{row}.eval.json", folder / f"{row}.bench.json"
        if not (ev.exists() and be.exists()):
            continue
        e, b = json.loads(ev.read_text()), json.loads(be.read_text())
        floor = floor or e["floor"]
        merged.append({**b, **e, "name": label, "group": group, "img_per_s": b["img_per_s"]})
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
    png = plot_quality_speed(
        merged,
        folder / "quality_speed.png",
        floor=floor["fid"],
        title=f"Fashion-MNIST, CPU (2 cores), FID at N={n}",
    )
    print(f"\nplot: {png}", file=sys.stderr)


if __name__ == "__main__":
    main()
