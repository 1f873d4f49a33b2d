"""Where running only the chosen experts beats the masked dense FFN: time of each expert backend / dense FFN.

For FFN shapes of width C (hidden 4C) split into E experts of M units, N tokens with k experts each, times the
dense FFN, the masked form and the grouped kernels ("segment", "padded") side by side (interleaved, medians),
inference mode, the given dtype and thread count, process CPU time, freed memory kept for reuse as the CLI's
sampling commands do (`--system-malloc` to measure without). `cost` = (grouped time / dense time) / (k / E):
grouped pays where (k / E) * cost < 1 (the masked form costs about the dense FFN).
`argen.nn.expert_kernels.GROUPED_COST_CPU` holds the CPU costs this script measured.

    OMP_NUM_THREADS=1 python scripts/moe_crossover.py --out results/cpu/moe_crossover.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from argen.nn.moe import MoEFFN
from argen.runtime import keep_freed_memory

# (width C, experts E, tokens N): fmnist width 128 at its last scales (batch 16 with CFG: ~6.5k kept
# tokens), and VAR-d16..d30-like widths at the tokens of a batch of a few images.
SHAPES = [
    (128, 16, 6500),
    (128, 8, 6500),
    (128, 4, 6500),
    (256, 16, 4000),
    (512, 16, 2000),
    (1024, 16, 1600),
    (1024, 8, 1600),
]


def timed(fn, repeats: int) -> list[float]:
    """CPU seconds of this process per call (one thread: other processes' load stays out)."""
    out = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        out.append(time.process_time() - t0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--fractions", default="0.75,0.5,0.25", help="k / E values")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=None)
    p.add_argument("--system-malloc", action="store_true", help="skip argen.runtime.keep_freed_memory")
    args = p.parse_args()
    kept = False if args.system_malloc else keep_freed_memory()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    rows = []
    for width, experts, tokens in SHAPES:
        torch.manual_seed(0)
        fc1, fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
        x = torch.randn(tokens, width, dtype=dtype)
        for frac in map(float, args.fractions.split(",")):
            k = max(1, round(frac * experts))
            ffns = {
                b: MoEFFN.from_dense(fc1, fc2, experts, kmeans_iters=2, backend=b).to(dtype)
                for b in ("masked", "segment", "padded")
            }
            for f in ffns.values():
                with torch.no_grad():
                    f.router.weight.normal_()
            calls = {
                "dense": lambda f=ffns["masked"], x=x: f(x),  # every expert on: the dense FFN, as VAR runs it
                **{b: (lambda f=f, x=x, k=k: f(x, k)) for b, f in ffns.items()},
            }
            times: dict[str, list[float]] = {name: [] for name in calls}
            with torch.inference_mode():
                for fn in calls.values():
                    fn()
                for _ in range(args.repeats):
                    for name, fn in calls.items():
                        times[name] += timed(fn, 1)
            med = {name: statistics.median(v) for name, v in times.items()}
            rel = {name: med[name] / med["dense"] for name in calls}
            row = {
                "width": width,
                "experts": experts,
                "expert_hidden": 4 * width // experts,
                "tokens": tokens,
                "k": k,
                "k_frac": k / experts,
                "dense_ms": round(1e3 * med["dense"], 3),
                "time_over_dense": {n: round(v, 3) for n, v in rel.items()},
                "cost_segment": round(rel["segment"] / (k / experts), 3),
                "cost_padded": round(rel["padded"] / (k / experts), 3),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "keep_freed_memory": kept,
        "time": "process CPU time, medians of interleaved calls",
        "rows": rows,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
