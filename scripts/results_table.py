"""The README results table and the quality-vs-speed plot, from `scripts/results_fmnist.sh` output.

python scripts/results_table.py [results/fmnist]   -> markdown on stdout, <dir>/quality_speed.png
"""

from __future__ import annotations

import json
import statistics
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
    # the same budget distilled 4x shorter (60 + 150 steps; shipped before, git 74e7a9c; not re-run here)
    "actvar_short": ("ActVAR, experts + tokens, 4x shorter distillation", "experts+tokens, short", "ActVAR"),
    "actvar_fast": ("ActVAR, experts + tokens, lower budget", "experts+tokens -36%", "ActVAR"),
    "actvar_experts": ("ActVAR ablation: experts only", "experts only -19%", "ActVAR"),
    "actvar_tokens": ("ActVAR ablation: tokens only", "tokens only -20%", "ActVAR"),
    # the tokens-only budget distilled 4x shorter (shipped before, git d361845; not re-run here)
    "actvar_tokens_short": (
        "ActVAR ablation: tokens only, 4x shorter distillation",
        "tokens only, short",
        "ActVAR",
    ),
}
# rows of a budget's earlier, shorter distillation: their time is the shipped model's (same budget)
SHORT = ("actvar_short", "actvar_tokens_short")


def beyond(a: dict, b: dict) -> str:
    """Whether two rows' mean FIDs differ by more than the larger of their seed spreads."""
    fa, fb = a["seeds"]["fid"], b["seeds"]["fid"]
    if len(fa) < 2 or len(fb) < 2:
        return "one seed only"
    spread = max(max(fa) - min(fa), max(fb) - min(fb))
    gap = abs(a["fid"] - b["fid"])
    return f"{'yes' if gap > spread else 'no'} (FID gap {gap:.2f}, spread {spread:.2f})"


# ActVAR rows -> their side-by-side CPU-time comparison with the teacher (scripts/actvar_speed.sh, batch 16)
SPEED = Path("results/cpu/actvar_speed/s5")
SPEED_FILES = {
    "actvar": "fmnist_main_b16",
    "actvar_fast": "fmnist_fast_b16",
    "actvar_experts": "fmnist_experts_b16",
    "actvar_tokens": "fmnist_tokens_b16",
}


def time_saved(row: str) -> str:
    """CPU time saved against the teacher, process time, calls alternating (not the bench's wall-clock); the
    median over repeated runs (NAME.json, NAME_run2.json, ...) with their range when there are several."""
    name = SPEED_FILES.get(row, "-")
    runs = [SPEED / f"{name}.json", *sorted(SPEED.glob(f"{name}_run*.json"))]
    cuts = sorted(1 - json.loads(p.read_text())["time_ratio"] for p in runs if p.is_file())
    if not cuts:
        return "not measured" if row not in SHORT else "as the shipped one (same budget)"
    if len(cuts) == 1:
        return f"{100 * cuts[0]:.1f}%"
    low, mid, high = 100 * cuts[0], 100 * statistics.median(cuts), 100 * cuts[-1]
    return f"{mid:.1f}% (median of {len(cuts)} runs, {low:.1f}-{high:.1f}%)"


def ablation(merged: list[dict]) -> None:
    """ActVAR against its dense teacher: FLOPs saved, relative FID/KID/accuracy change, CPU time saved."""
    teacher = next((r for r in merged if r["group"] == "VAR"), None)
    students = [r for r in merged if r["group"] == "ActVAR"]
    if teacher is None or not students:
        return
    print(
        "\n| ActVAR vs its VAR teacher | experts run (last 3 scales) | tokens kept (last 3 scales) "
        "| FLOPs saved | FID change | KID change | class acc. change | beyond the seed spread? "
        "| CPU time saved (b16, side by side) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in students:
        cfg = read_meta(r["generator"]["model"])["config"]
        rel = {k: 100 * (r[k] / teacher[k] - 1) for k in ("fid", "kid_mean", "class_accuracy")}
        print(
            f"| {r['name']} | {cfg['experts_k'][-1]} of {cfg['num_experts']} | {cfg['keep_ratio'][-1]:.0%} "
            f"| {100 * (1 - r['gflops'] / teacher['gflops']):.1f}% | {rel['fid']:+.1f}% "
            f"| {rel['kid_mean']:+.1f}% | {rel['class_accuracy']:+.1f}% | {beyond(r, teacher)} "
            f"| {time_saved(r['row'])} |"
        )


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


def seeds(folder: Path, row: str, e: dict) -> dict[str, list[float]]:
    """FID, KID and class accuracy of every scored sampling seed (seed 0 first)."""
    reports = [e] + [json.loads(p.read_text()) for p in sorted(folder.glob(f"{row}.seed*.eval.json"))]
    return {k: [r[k] for r in reports] for k in ("fid", "kid_mean", "class_accuracy")}


def _two(values: list[float], fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in values)


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "results/fmnist")
    merged, floor = [], None
    for row, (label, short, group) in ROWS.items():
        ev, be = folder / f"{row}.eval.json", folder / f"{row}.bench.json"
        if not (ev.exists() and be.exists()):
            continue
        e, b = json.loads(ev.read_text()), json.loads(be.read_text())
        floor = floor or e["floor"]
        per_seed = seeds(folder, row, e)
        means = {k: sum(v) / len(v) for k, v in per_seed.items()}
        merged.append(
            {**b, **e, **means, "seeds": per_seed, "settings": settings(e), "row": row}
            | {"name": label, "short": short, "group": group, "img_per_s": b["img_per_s"]}
        )
    if not merged:
        raise SystemExit(f"no results in {folder}: run scripts/results_fmnist.sh first")
    n = merged[0]["n"]
    print(
        f"| model | sampling | steps | GFLOPs/img | FID (N={n}), seeds 0 / 1 | KID x1e3 | class acc. "
        "| img/s CPU (b16) | s/img CPU (b1) | img/s GPU |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| real test images (floor) | | | | {floor['fid']:.2f} | {1e3 * floor['kid_mean']:.2f} "
        f"| {100 * floor['class_accuracy']:.1f}% | | | |"
    )
    for r in merged:
        sd = r["seeds"]
        print(
            f"| {r['name']} | {r['settings']} | {r['steps']} | {r['gflops']:.3f} | {_two(sd['fid'], '.2f')} "
            f"| {_two([1e3 * k for k in sd['kid_mean']], '.2f')} "
            f"| {_two([100 * a for a in sd['class_accuracy']], '.1f')}% | {r['img_per_s']:.1f} "
            f"| {r['latency_batch1_s']:.3f} | not measured |"
        )
    spreads = [max(r["seeds"]["fid"]) - min(r["seeds"]["fid"]) for r in merged if len(r["seeds"]["fid"]) > 1]
    if spreads:
        print(
            f"\nFID spread between the two sampling seeds: {min(spreads):.2f} to {max(spreads):.2f} "
            f"(median {sorted(spreads)[len(spreads) // 2]:.2f}); columns list seed 0 / seed 1, the mean is "
            "compared below."
        )
    by_row = {r["row"]: r for r in merged}
    pairs = [
        ("ear31", "raster"),
        ("ear_any31", "ear31"),
        ("ear_any16", "ear_any31"),
        ("ear_any8", "ear_any31"),
        ("actvar", "actvar_short"),
        ("actvar_tokens", "actvar_tokens_short"),
    ]
    pairs = [(a, b) for a, b in pairs if a in by_row and b in by_row]
    if pairs:
        print("\n| comparison | mean FID | differs beyond the seed spread? |\n|---|---|---|")
        for a, b in pairs:
            ra, rb = by_row[a], by_row[b]
            print(f"| {ra['name']} vs {rb['name']} | {ra['fid']:.2f} vs {rb['fid']:.2f} | {beyond(ra, rb)} |")
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
