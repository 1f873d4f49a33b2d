"""Where ActVAR's sampling time goes: dense VAR vs ActVAR, time side by side and top ops by self time.

Runs the cached next-scale step loop only (`sample_next_scale` minus the VQVAE: a random (B, l, Cv) input per
scale, so both models see the same work), CFG on (2B rows), one thread unless OMP_NUM_THREADS says more.

    OMP_NUM_THREADS=1 python scripts/profile_actvar.py --size fmnist --batch 16 --dtype fp32
    OMP_NUM_THREADS=1 python scripts/profile_actvar.py --size d16 --batch 4 --dtype fp32 --repeats 3

`--size fmnist` uses the shipped var_fmnist / actvar_fmnist; `--size d16` a random VAR-d16 (as `argen init`
writes it) and `ActVAR.from_dense` with the d16 preset budget; `--budget` builds the sparse model from the
dense one at other settings. Prints one JSON object: median time per call, time ratio, analytic FLOPs ratio,
per-scale times and the top ops of each model. Like the CLI it keeps freed memory for reuse
(`argen.runtime`); `--system-malloc` measures without.

Time is the process's CPU time (`time.process_time`; one thread, so it is the thread's compute time):
on a shared machine other processes' load then does not enter the ratio, which wall-clock time (reported
too) does not guarantee. Calls alternate between the two models and the medians are compared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from argen.models.actvar import ActVAR, actvar_config
from argen.models.checkpoints import load_model
from argen.models.flops import actvar_sampling_flops, var_sampling_flops
from argen.models.var import VAR, var_config
from argen.runtime import keep_freed_memory


def build(size: str, dtype: torch.dtype, sparse_name: str, budget: dict | None) -> tuple[VAR, ActVAR]:
    """Dense and sparse model; `budget` (ActVARConfig fields) builds the sparse one from the dense one with
    untrained routers and gates (the time does not depend on them)."""
    if size == "fmnist":
        dense = load_model("var_fmnist")
        sparse = load_model(sparse_name) if budget is None else None
    else:
        torch.manual_seed(0)
        dense = VAR(var_config(size))
        budget = budget or {}
    if budget is not None:
        preset = "fmnist" if size == "fmnist" else size
        sparse = ActVAR.from_dense(dense, actvar_config(preset, var=dense.config, kmeans_iters=5, **budget))
    return dense.to(dtype).eval(), sparse.to(dtype).eval()


@torch.no_grad()
def run_steps(model, batch: int, scale_times: list[float] | None = None) -> None:
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


def top_ops(model, batch: int, n: int = 12) -> list[dict]:
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="fmnist", help="fmnist (shipped models) or a VAR preset (d16, d20, ...)")
    p.add_argument("--sparse", default="actvar_fmnist", help="the ActVAR model at --size fmnist")
    p.add_argument("--budget", type=json.loads, help='ActVAR fields as JSON, e.g. {"keep_ratio": [...]}')
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-profile", action="store_true", help="timing only")
    p.add_argument("--system-malloc", action="store_true", help="skip argen.runtime.keep_freed_memory")
    args = p.parse_args()
    kept = False if args.system_malloc else keep_freed_memory()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    dense, sparse = build(args.size, dtype, args.sparse, args.budget)
    models = {"dense": dense, "actvar": sparse}
    for m in models.values():
        run_steps(m, args.batch)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in models}  # CPU seconds of this process
    wall: dict[str, list[float]] = {k: [] for k in models}
    scales = {k: [] for k in models}
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
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
