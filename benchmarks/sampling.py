"""Sampling speed of raster vs EAR vs VAR vs ActVAR at comparable backbone sizes, random weights.

Every row is what `argen bench` reports for one sampler (median of --repeats calls after --warmup, per batch
size; latency at batch 1, img/s, peak memory, passes, tokens, GFLOPs, MFU against this machine's matmul peak
in the dtype that ran, measured once at the start). Random weights: speed does not depend on them. CFG on,
tokenizer decoding included. The models are `argen init` files of the Fashion-MNIST presets (`fmnist_raster_s`
and `fmnist_s` share one 8-layer, 384-wide backbone; VAR `fmnist` has 6 blocks) with the shipped `vq2_fmnist`
tokenizer for raster/EAR and a random `fmnist` msvq for VAR; the ActVAR rows are that VAR split by
`ActVAR.from_dense` at the `fmnist` and `fmnist_tokens` budgets (what `argen distill` with 0 training steps
writes). Backs the table "Sampling speed on CPU" in docs/05-benchmarks-results.md (JSON in results/cpu/).

    python -m benchmarks sampling --threads 1 --batch-sizes 1,16 --out results/cpu/sampling.json
    python -m benchmarks sampling --device cuda --batch-sizes 1,64 --dtype bf16
    python -m benchmarks sampling --rows var,var_reference --repeats 5
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from argen.config import to_dict
from argen.device import measure_peak
from argen.eval.bench import bench_sampler
from argen.sampling.pipeline import GenerateConfig, Pipeline
from benchmarks import common

SMOKE = ["--size", "debug", "--batch-sizes", "1", "--repeats", "1", "--warmup", "0", "--dtype", "fp32"]

# row -> (label in plots, generator, tokenizer, GenerateConfig fields)
ROWS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "raster": ("raster 256", "raster", "vq", {}),
    "ear31": ("EAR sides (31)", "ear", "vq", {}),
    "ear16": ("EAR 16", "ear", "vq", {"schedule": 16}),
    "ear8": ("EAR 8", "ear", "vq", {"schedule": 8}),
    "var": ("VAR", "var", "msvq", {}),
    "var_reference": ("VAR reference", "var", "msvq", {"sampler": "reference"}),
    "actvar": ("ActVAR", "actvar", "msvq", {}),
    # token sparsity only (70% of tokens on the last three scales, every expert): what saves CPU time
    "actvar_tokens": ("ActVAR tokens only", "actvar_tokens", "msvq", {}),
}
# size -> model -> (task, preset, config overrides); "vq" may be a shipped name; ActVAR: (budget, overrides)
SIZES: dict[str, dict[str, Any]] = {
    "fmnist": {
        "raster": ("gpt", "fmnist_raster_s", {}),
        "ear": ("gpt", "fmnist_s", {}),
        "var": ("var", "fmnist", {}),
        "msvq": ("msvq", "fmnist", {}),
        "vq": "vq2_fmnist",
        "actvar": ("fmnist", {}),
        "actvar_tokens": ("fmnist_tokens", {}),
    },
    "debug": {  # the tiny presets, for the smoke run
        "raster": ("gpt", "debug_raster", {}),
        "ear": ("gpt", "debug", {}),
        "var": ("var", "debug", {}),
        "msvq": ("msvq", "debug", {"in_channels": 1, "vocab_size": 64}),
        "vq": ("tokenizer", "debug", {"in_channels": 1, "out_channels": 1, "codebook_size": 64}),
        "actvar": ("debug", {}),
        "actvar_tokens": ("debug", {"experts_k": None}),  # every expert, the debug budget's token ratios
    },
}


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--batch-sizes", default="1,16", help="comma-separated (default: 1,16)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per batch size (median)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per batch size")
    p.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp32"), help="as argen bench's")
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated: " + ", ".join(ROWS))
    p.add_argument("--size", default="fmnist", choices=sorted(SIZES), help="model presets (default: fmnist)")


def actvar_file(var_file: str, budget: str, overrides: dict[str, Any]) -> str:
    """ActVAR split from the dense VAR file at `budget` (untrained routers and gates), made on first use."""
    from argen.models.actvar import ActVAR, actvar_config
    from argen.models.checkpoints import load_model, save_model

    suffix = "".join(f"_{k}{v}" for k, v in sorted(overrides.items()))
    out = Path(var_file).parent / f"actvar_{budget}{suffix}_of_{Path(var_file).stem}.safetensors"
    if not out.exists():
        dense = load_model(var_file)
        torch.manual_seed(0)
        save_model(ActVAR.from_dense(dense, actvar_config(budget, var=dense.config, **overrides)), out)
    return str(out)


def model_file(spec: str | tuple[str, str, dict[str, Any]]) -> str:
    """A shipped model's name or a file as it is; (task, preset, overrides): that random-weight model's file
    (`benchmarks.common.random_model`, made on first use)."""
    if isinstance(spec, str):
        return spec
    task, preset, overrides = spec
    return common.random_model(task, preset, **overrides)


def model_files(size: str, needed: set[str]) -> dict[str, str]:
    """The `needed` model files of `size` (random weights, made on first use under benchmarks.common.WORK)."""
    spec = SIZES[size]

    def make(name: str) -> str:
        return actvar_file(make("var"), *spec[name]) if name.startswith("actvar") else model_file(spec[name])

    return {name: make(name) for name in needed}


def bench_row(pipe: Pipeline, args: argparse.Namespace, label: str, peak: float) -> dict[str, Any]:
    """`argen bench`'s report of one pipeline."""
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    pipe.cfg.batch_size = max(batch_sizes)
    cost = pipe.cost()
    meta = {
        "name": label,
        "model": pipe.cfg.model,
        "tokenizer": pipe.cfg.tokenizer,
        **cost,
        "flops_per_image": cost["gflops"] * 1e9,
        "sampling": to_dict(pipe.sampling),
        "dtype": pipe.dtype,
        "peak_flops_per_s": peak,
    }

    def sample_fn(batch: int) -> torch.Tensor:
        return pipe.sample(torch.arange(batch) % pipe.num_classes).images

    return bench_sampler(sample_fn, batch_sizes, args.warmup, args.repeats, args.device, meta)


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = args.rows.split(",")
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        raise SystemExit(f"sampling: unknown rows {unknown}; choose from {', '.join(ROWS)}")
    files = model_files(args.size, {m for r in rows for m in ROWS[r][1:3]})
    peaks: dict[str, float] = {}  # dtype -> matmul peak, measured once
    out: dict[str, Any] = {"size": args.size, "device": args.device, "threads": torch.get_num_threads()}
    out["rows"] = {}
    for row in rows:
        label, model, tokenizer, extra = ROWS[row]
        cfg = GenerateConfig(files[model], files[tokenizer], device=args.device, dtype=args.dtype, **extra)
        pipe = Pipeline.load(cfg)
        if pipe.dtype not in peaks:
            peaks[pipe.dtype] = measure_peak(args.device, [pipe.dtype])["dtypes"][pipe.dtype][
                "peak_flops_per_s"
            ]
        out["rows"][row] = bench_row(pipe, args, label, peaks[pipe.dtype])
    out["peak_flops_per_s"] = peaks
    out["dtypes"] = sorted(peaks)
    return out


def check(result: dict[str, Any]) -> None:
    assert list(result["rows"]) == list(ROWS)
    for row, report in result["rows"].items():
        assert report["img_per_s"] > 0 and report["latency_batch1_s"] > 0, row
        assert report["gflops"] > 0 and 0 < report["mfu"] < float("inf"), row
        assert report["dtype"] == "fp32", row
    rows = result["rows"]
    assert rows["ear8"]["steps"] == 8 and rows["ear16"]["steps"] == 16  # the schedules really ran
    assert rows["actvar"]["gflops"] < rows["var"]["gflops"]  # the sparse budget really applies
    assert rows["var_reference"]["sampling"] == rows["var"]["sampling"]
