"""ActVAR's sampling time against its dense VAR teacher, side by side, with the top ops of each.

Runs the cached next-scale step loop only (`sample_next_scale` minus the VQVAE: a random (B, l, Cv) input per
scale, so both models see the same work), CFG on (2B rows). Time is the process's CPU time
(`time.process_time`; with one thread it is the thread's compute time): on a shared machine other
processes' load then does not enter the ratio, which wall-clock time (reported too) does not guarantee.
Calls alternate between the two models and the medians are compared; `flops_ratio` is the analytic one.
Like the CLI it keeps freed memory for reuse (`argen.runtime`); `--system-malloc` measures without.

`--size fmnist` uses the shipped var_fmnist and `--sparse` (default actvar_fmnist); `--size d16` (any VAR
preset, `debug` included) a random VAR of that preset and `ActVAR.from_dense` with the preset's budget;
`--budget` builds the sparse model from the dense one at other settings (untrained routers and gates: the
time does not depend on them).

`--preset-runs fmnist|d16|all` runs the fixed set behind docs/actvar_speed.md and the ActVAR rows of
docs/05-benchmarks-results.md (results/cpu/actvar_speed/s5/: ~40 CPU minutes on the 2-core EPYC), one JSON
per run in `--out-dir`, plus `argen bench --against var_fmnist` end to end (VQVAE decoding included); one
thread unless --threads says more.

    python -m benchmarks actvar_speed --threads 1 --size fmnist --batch 16 --dtype fp32
    python -m benchmarks actvar_speed --threads 1 --size d16 --batch 4 --repeats 3
    python -m benchmarks actvar_speed --threads 1 --preset-runs all --out-dir results/cpu/actvar_speed/s5
    python -m benchmarks actvar_speed --preset-runs fmnist --out-dir results/cpu/actvar_speed/retrained
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from argen.io import atomic_write_text
from argen.models.actvar import ActVAR, actvar_config
from argen.models.checkpoints import load_model
from argen.models.flops import actvar_sampling_flops, var_sampling_flops
from argen.models.var import VAR, var_config
from argen.runtime import keep_freed_memory

SMOKE = ["--size", "debug", "--batch", "1", "--repeats", "1", "--system-malloc"]

_CPU_BUDGET = json.dumps({"experts_k": None, "keep_ratio": [1.0] * 7 + [0.65] * 3}, separators=(",", ":"))
_FMNIST_B16 = "--batch 16 --repeats 7 --no-profile --sparse actvar_"

# file name -> options of each preset run: fmnist at 7 repeats, d16 at 3-5 (~40 CPU minutes in all)
PRESET_RUNS: dict[str, dict[str, str]] = {
    "fmnist": {
        **{f"fmnist_main_b{b}": f"--sparse actvar_fmnist --batch {b} --repeats 7" for b in (1, 16, 64)},
        "fmnist_cpu_budget_b16": f"--budget {_CPU_BUDGET} --batch 16 --repeats 7 --no-profile",
        **{f"fmnist_{kind}_b16": f"{_FMNIST_B16}{kind}_fmnist" for kind in ("tokens", "experts", "fast")},
        "fmnist_main_b16_bf16": "--sparse actvar_fmnist --batch 16 --repeats 3 --dtype bf16 --no-profile",
    },
    "d16": {
        "d16_b1": "--size d16 --batch 1 --repeats 3",
        "d16_b4": "--size d16 --batch 4 --repeats 5 --no-profile",
        "d16_b16": "--size d16 --batch 16 --repeats 3 --no-profile",
    },
}
AGAINST = ("actvar_fmnist", "actvar_tokens_fmnist")  # `argen bench --against var_fmnist`, after fmnist's runs


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="fmnist", help="fmnist (the shipped models) or a VAR preset")
    p.add_argument("--sparse", default="actvar_fmnist", help="the ActVAR model at --size fmnist")
    p.add_argument("--budget", type=json.loads, help='ActVAR fields as JSON, e.g. {"keep_ratio": [...]}')
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-profile", action="store_true", help="timing only")
    p.add_argument("--system-malloc", action="store_true", help="skip argen.runtime.keep_freed_memory")
    p.add_argument(
        "--preset-runs",
        choices=("fmnist", "d16", "all"),
        help="the fixed set of runs behind the docs (of the options above only --system-malloc applies)",
    )
    p.add_argument("--out-dir", default="results/cpu/actvar_speed", help="--preset-runs: a JSON per run here")


def build(size: str, dtype: torch.dtype, sparse_name: str, budget: dict | None) -> tuple[VAR, ActVAR]:
    """Dense and sparse model; `budget` (ActVARConfig fields) builds the sparse one from the dense one."""
    if size == "fmnist":
        dense = load_model("var_fmnist")
        sparse = load_model(sparse_name) if budget is None else None
    else:
        torch.manual_seed(0)
        dense = VAR(var_config(size))
        budget = budget or {}
    if budget is not None:
        sparse = ActVAR.from_dense(dense, actvar_config(size, var=dense.config, kmeans_iters=5, **budget))
    return dense.to(dtype).eval(), sparse.to(dtype).eval()


@torch.no_grad()
def run_steps(model: VAR | ActVAR, batch: int, scale_times: list[float] | None = None) -> None:
    """The cached step loop over every scale with CFG rows (2 * batch)."""
    var = model.var if isinstance(model, ActVAR) else model
    vc, dtype = var.config, var.pos_1LC.dtype
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(2 * batch) % (vc.num_classes + 1)
    with var.kv_caches(2 * batch):
        cond = var.class_emb(labels)
        mods = var.block_mods(cond)
        lvl_pos = var.lvl_pos()
        x = var.first_scale_input(cond, lvl_pos)
        for si in range(len(vc.patch_nums)):
            t0 = time.process_time()
            model.step(si, x, cond, mods)
            if scale_times is not None:
                scale_times.append(time.process_time() - t0)
            if si + 1 < len(vc.patch_nums):
                pn = vc.patch_nums[si + 1]
                nxt = torch.randn(2 * batch, pn * pn, vc.vae_channels, generator=g).to(dtype)
                x = var.next_scale_input(si + 1, nxt, lvl_pos)


def top_ops(model: VAR | ActVAR, batch: int, n: int = 12) -> list[dict]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_steps(model, batch)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows)
    return [
        {
            "op": e.key,
            "calls": e.count,
            "self_ms": round(e.self_cpu_time_total / 1e3, 2),
            "share": round(e.self_cpu_time_total / total, 3),
        }
        for e in rows[:n]
    ]


def compare(args: argparse.Namespace, kept: bool) -> dict[str, Any]:
    """One side-by-side comparison (the schema of results/cpu/actvar_speed/*.json)."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    dense, sparse = build(args.size, dtype, args.sparse, args.budget)
    models = {"dense": dense, "actvar": sparse}
    for m in models.values():
        run_steps(m, args.batch)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in models}  # CPU seconds of this process
    wall: dict[str, list[float]] = {k: [] for k in models}
    scales: dict[str, list[list[float]]] = {k: [] for k in models}
    for _ in range(args.repeats):  # interleaved: both see the same machine load
        for k, m in models.items():
            per_scale: list[float] = []
            t0, c0 = time.perf_counter(), time.process_time()
            run_steps(m, args.batch, per_scale)
            wall[k].append(time.perf_counter() - t0)
            times[k].append(time.process_time() - c0)
            scales[k].append(per_scale)
    med = {k: statistics.median(v) for k, v in times.items()}
    count = dict(batch=args.batch, cfg=True, adaln_per_scale=False)
    f_dense = var_sampling_flops(dense.config, **count)["total"]
    f_sparse = actvar_sampling_flops(sparse.config, **count)["total"]
    out = {
        "size": args.size,
        "sparse": args.sparse if args.budget is None and args.size == "fmnist" else args.budget,
        "batch": args.batch,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "keep_freed_memory": kept,
        "timed": "cached next-scale step loop, CFG rows; process CPU time, medians of interleaved calls",
        "median_cpu_s": med,
        "time_ratio": med["actvar"] / med["dense"],
        "median_wall_s": {k: statistics.median(v) for k, v in wall.items()},
        "flops_ratio": f_sparse / f_dense,
        "per_scale_median_cpu_s": {
            k: [round(statistics.median(run[i] for run in v), 5) for i in range(len(v[0]))]
            for k, v in scales.items()
        },
    }
    if not args.no_profile:
        out["top_ops"] = {k: top_ops(m, args.batch) for k, m in models.items()}
    return out


def preset_runs(args: argparse.Namespace, kept: bool) -> dict[str, Any]:
    """The docs' set of runs: each run's JSON in --out-dir; returns their time and FLOPs ratios."""
    from argen.cli import main as argen_main

    if not getattr(args, "threads", None):  # the runner's --threads; the docs' runs used one
        torch.set_num_threads(1)
    single = argparse.ArgumentParser()
    add_args(single)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"out_dir": str(out_dir), "threads": torch.get_num_threads(), "runs": {}}
    for group in ("fmnist", "d16"):
        if args.preset_runs not in (group, "all"):
            continue
        for name, options in PRESET_RUNS[group].items():
            result = compare(single.parse_args(options.split()), kept)
            atomic_write_text(out_dir / f"{name}.json", json.dumps(result, indent=1) + "\n")
            summary["runs"][name] = {k: result[k] for k in ("time_ratio", "flops_ratio", "median_cpu_s")}
        if group == "fmnist":
            for model in AGAINST:
                out = out_dir / f"bench_against_{model}.json"
                bench = (
                    f"bench --model {model} --against var_fmnist --batch-sizes 1,16 --repeats 5 --out {out}"
                )
                argen_main(["--threads", str(torch.get_num_threads()), *bench.split()])
                summary["runs"][f"bench_against_{model}"] = str(out)
    return summary


def run(args: argparse.Namespace) -> dict[str, Any]:
    kept = False if args.system_malloc else keep_freed_memory()
    return preset_runs(args, kept) if args.preset_runs else compare(args, kept)


def check(result: dict[str, Any]) -> None:
    assert 0 < result["flops_ratio"] < 1, result["flops_ratio"]
    assert all(t > 0 for t in result["median_cpu_s"].values()), result["median_cpu_s"]
    assert all(t > 0 for t in result["median_wall_s"].values()), result["median_wall_s"]
    assert result["time_ratio"] > 0 and len(result["per_scale_median_cpu_s"]["actvar"]) == 4
    assert result["top_ops"]["dense"] and result["top_ops"]["actvar"]
