"""bf16 vs fp32, side by side in one run: sampling img/s and MFU, and training img/s (issue 13's acceptance).

Every ratio comes from calls interleaved dtype by dtype (fp32, bf16, fp32, bf16, ...) in one process, medians
reported, so load from other processes on a shared machine hits both dtypes alike. MFU = achieved model
FLOP/s (analytic, `argen flops`) / this machine's matmul peak in that dtype (`argen peak`, measured first).

    OMP_NUM_THREADS=1 python scripts/bench_dtype.py sample --set shipped --batch 16 --out results/dtype/x.json
    OMP_NUM_THREADS=1 python scripts/bench_dtype.py train --config configs/ear3_fmnist.json --steps 30 ...
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from argen.config import load_config
from argen.device import bf16_is_fast, measure_peak
from argen.sampling.pipeline import GenerateConfig, Pipeline

DTYPES = ("fp32", "bf16")
RANDOM = Path(
    "runs/bench_dtype/random"
)  # `argen init` outputs (random weights: speed does not need training)
# name -> (model, tokenizer ("" = the one the model records), schedule)
SETS: dict[str, dict[str, tuple[str, str, int | None]]] = {
    "shipped": {
        "raster": ("raster_fmnist", "", None),
        "EAR 31": ("ear_fmnist", "", None),
        "EAR any 8": ("ear_any_fmnist", "", 8),
        "VAR": ("var_fmnist", "", None),
        "ActVAR": ("actvar_fmnist", "", None),
    },
    "presets384": {
        "raster 384": (str(RANDOM / "raster.safetensors"), "vq2_fmnist", None),
        "EAR 384 31": (str(RANDOM / "ear.safetensors"), "vq2_fmnist", None),
        "EAR 384 8": (str(RANDOM / "ear.safetensors"), "vq2_fmnist", 8),
        "VAR fmnist": (str(RANDOM / "var.safetensors"), str(RANDOM / "msvq.safetensors"), None),
    },
    "var_d16": {
        "VAR-d16": (str(RANDOM / "var_d16.safetensors"), str(RANDOM / "msvq_imagenet.safetensors"), None)
    },
}
INITS = {
    "presets384": [
        ("gpt", "fmnist_raster_s", "raster"),
        ("gpt", "fmnist_s", "ear"),
        ("var", "fmnist", "var"),
        ("msvq", "fmnist", "msvq"),
    ],
    "var_d16": [("var", "d16", "var_d16"), ("msvq", "var_vae_ch160v4096z32", "msvq_imagenet")],
}


def _init(which: str) -> None:
    for task, preset, name in INITS.get(which, []):
        if not (RANDOM / f"{name}.safetensors").exists():
            RANDOM.mkdir(parents=True, exist_ok=True)
            argen = [
                sys.executable,
                "-m",
                "argen",
                "init",
                task,
                "--preset",
                preset,
                "--out",
                str(RANDOM / name),
            ]
            subprocess.run(argen, check=True)


def _median_row(times: list[float], batch: int, gflops: float, peak: float) -> dict[str, Any]:
    med = statistics.median(times)
    achieved = gflops * 1e9 * batch / med
    return {
        "median_s": med,
        "img_per_s": batch / med,
        "times_s": times,
        "achieved_flops_per_s": achieved,
        "mfu": achieved / peak,
    }


def bench_sample(args: argparse.Namespace, peaks: dict[str, float]) -> dict[str, Any]:
    _init(args.set)
    labels = torch.arange(args.batch) % 10
    rows = {}
    for name, (model, tok, schedule) in SETS[args.set].items():
        if args.only and name not in args.only:
            continue
        pipes = {
            dt: Pipeline.load(
                GenerateConfig(model, tok, schedule, batch_size=args.batch, device="cpu", dtype=dt)
            )
            for dt in args.dtypes
        }
        gflops = pipes[args.dtypes[0]].cost()["gflops"]
        times: dict[str, list[float]] = {dt: [] for dt in args.dtypes}
        for rep in range(args.warmup + args.repeats):
            for dt in args.dtypes:  # interleaved: fp32, bf16, fp32, bf16, ...
                seconds = pipes[dt].sample(labels).seconds
                if rep >= args.warmup:
                    times[dt].append(seconds)
        row: dict[str, Any] = {
            "model": model,
            "tokenizer": tok,
            "schedule": schedule,
            "gflops_per_image": gflops,
        }
        row.update({dt: _median_row(times[dt], args.batch, gflops, peaks[dt]) for dt in args.dtypes})
        if set(DTYPES) <= set(args.dtypes):
            row["bf16_over_fp32"] = row["bf16"]["img_per_s"] / row["fp32"]["img_per_s"]
        rows[name] = row
        print(name, json.dumps({k: v for k, v in row.items() if k not in args.dtypes}), flush=True)
        for dt in args.dtypes:
            print(f"  {dt}: {row[dt]['img_per_s']:.2f} img/s, MFU {row[dt]['mfu']:.3f}", flush=True)
    return {"batch": args.batch, "repeats": args.repeats, "warmup": args.warmup, "rows": rows}


# a config's token file -> (the stand-in used where it is missing, as in a clean clone: the test split
# encoded by the shipped tokenizer of that kind, made on first use; the codes do not change training speed)
TOKEN_FILES = {
    "data/vq2_train.npz": ("runs/bench_dtype/vq2_test.npz", "vq2_fmnist"),
    "data/msvq2_train.npz": ("runs/bench_dtype/msvq2_test.npz", "msvq2_fmnist"),
}


def _token_file(root: str) -> str:
    if Path(root).exists():
        return root
    stand_in, tokenizer = TOKEN_FILES[root]
    if not Path(stand_in).exists():
        argen = [sys.executable, "-m", "argen", "tokenize", "--tokenizer", tokenizer, "--split", "test"]
        subprocess.run([*argen, "--out", stand_in], check=True)
    return stand_in


def _train_rate(cfg_path: str, precision: str, steps: int, skip: int, out: Path, batch: int | None) -> float:
    """img/s over steps skip+1..steps of a fresh run (the first steps warm allocators and caches)."""
    from argen.config import TrainConfig
    from argen.training.loop import train

    sets = [f"steps={steps}", "log_every=1", "ckpt_every=0", f"precision={precision}", f"out_dir={out}"]
    sets += [f"batch_size={batch}"] if batch else []
    root = load_config(TrainConfig, cfg_path, []).data.root
    if root in TOKEN_FILES:  # the configs' full train-split token files, or the test split's
        sets.append(f"data.root={_token_file(root)}")
    cfg = load_config(TrainConfig, cfg_path, sets)
    train(cfg, resume="never")
    recs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    t = {r["step"]: r["step"] * cfg.batch_size / r["img_per_s"] for r in recs}  # cumulative seconds
    return (steps - skip) * cfg.batch_size / (t[steps] - t[skip])


def bench_train(args: argparse.Namespace) -> dict[str, Any]:
    rows = {}
    for cfg_path in args.config:
        rates: dict[str, list[float]] = {dt: [] for dt in args.dtypes}
        for _ in range(args.repeats):
            for dt in args.dtypes:
                RANDOM.parent.mkdir(parents=True, exist_ok=True)  # a clean clone has no runs/
                with tempfile.TemporaryDirectory(dir=RANDOM.parent) as tmp:
                    rates[dt].append(
                        _train_rate(cfg_path, dt, args.steps, args.skip, Path(tmp) / "run", args.train_batch)
                    )
        row: dict[str, Any] = {
            dt: {"img_per_s": statistics.median(rates[dt]), "runs": rates[dt]} for dt in args.dtypes
        }
        if set(DTYPES) <= set(args.dtypes):
            row["bf16_over_fp32"] = row["bf16"]["img_per_s"] / row["fp32"]["img_per_s"]
        rows[cfg_path] = row
        print(cfg_path, json.dumps(row), flush=True)
    return {
        "steps": args.steps,
        "skip": args.skip,
        "repeats": args.repeats,
        "batch": args.train_batch,
        "rows": rows,
    }


def quality(args: argparse.Namespace) -> dict[str, Any]:
    """Class accuracy of the same N samples (same seeds and indices) drawn in each dtype."""
    from argen.eval.classifier import class_accuracy, load_default_classifier
    from argen.eval.inception import to_uint8

    model, tok, schedule = SETS["shipped"][args.only[0] if args.only else "EAR 31"]
    labels = torch.arange(args.n) % 10
    classifier, rows = load_default_classifier(), {}
    for dt in args.dtypes:
        pipe = Pipeline.load(
            GenerateConfig(model, tok, schedule, batch_size=args.batch, device="cpu", dtype=dt)
        )
        samples = pipe.sample(labels)
        rows[dt] = {
            "class_accuracy": class_accuracy(classifier, to_uint8(samples.images), labels),
            "sample_seconds": samples.seconds,
        }
        print(dt, rows[dt], flush=True)
    return {"model": model, "n": args.n, "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=("sample", "train", "quality"))
    p.add_argument("--n", type=int, default=200, help="quality: samples per dtype (classes cycled)")
    p.add_argument("--set", default="shipped", choices=sorted(SETS), help="sample: which models")
    p.add_argument("--only", nargs="*", help="sample: only these names of the set")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--config", nargs="*", default=[], help="train: configs/*.json")
    p.add_argument("--steps", type=int, default=30, help="train: steps per run")
    p.add_argument("--train-batch", type=int, help="train: batch size (default: the config's)")
    p.add_argument("--skip", type=int, default=5, help="train: warm-up steps left out of img/s")
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--note", default="", help="free text stored in the JSON (e.g. machine load)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    args.dtypes = args.dtypes.split(",")
    t0 = time.time()
    peak = measure_peak("cpu", args.dtypes)
    peaks = {dt: peak["dtypes"][dt]["peak_flops_per_s"] for dt in args.dtypes}
    res = {
        "sample": lambda: bench_sample(args, peaks),
        "train": lambda: bench_train(args),
        "quality": lambda: quality(args),
    }[args.what]()
    res.update(
        command=" ".join(sys.argv),
        threads=torch.get_num_threads(),
        peak=peak,
        auto_dtype="bf16" if bf16_is_fast("cpu") else "fp32",
        wall_s=time.time() - t0,
        note=args.note,
        shared_machine="the CPU was shared with other agents' jobs while this ran",
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
