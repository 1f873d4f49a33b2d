"""The GPU set: on a CUDA machine, the GPU tests and the headline measurements in one run (~8 min), one JSON.

Parts, in this order (`--parts` picks some); each has a share of the time budget, records its error instead
of stopping the run, and the report is rewritten to --out after every part, so a run cut short keeps what
it measured:
  tests          `pytest -m cuda tests/test_cuda.py` (CUDA against CPU, bf16 against fp32, cached against
                 uncached, training steps): pass/fail counts and the failures' names
  peak           matmul peak FLOP/s in bf16 and fp32 (TF32 off, torch's default) at 8192^3
  var            VAR-d16 and VAR-d30, 256x256, random weights, batch 64, bf16: img/s (the multi-scale VQVAE's
                 decoding included) and MFU (analytic FLOPs, CFG included / the bf16 peak)
  ear_vs_raster  EAR-B (31 passes; 8 passes) against raster-B (LlamaGen-B, 256 passes), batch 64 and batch 1,
                 calls interleaved model by model, medians
  actvar         ActVAR at the d16 preset budget (routers and gates untrained: speed does not depend on
                 them) against its dense VAR-d16, batch 64, interleaved: time ratio against FLOPs ratio
  compiled       raster-B and EAR-B-8 token sampling (no decoding) with each cached pass compiled
                 (torch.compile, mode reduce-overhead: CUDA graphs) against eager, batch 1 and 64:
                 compile seconds, speed-up, and the fraction of tokens equal to eager's
Random weights throughout: speed does not depend on them (the checks of what the weights compute are the
tests' part). Timing: CUDA-synchronised wall clock of `Pipeline.sample` (tokenizer decoding included), one
untimed warm-up call per model, then --repeats rounds.

    python -m benchmarks gpu --out results/gpu/h200.json               # on the GPU machine (~8 min)
    python -m benchmarks gpu --smoke                                   # the same code on CPU, debug sizes
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from argen.io import atomic_write_text

PARTS = ("tests", "peak", "var", "ear_vs_raster", "actvar", "compiled")
# the models each size name builds: (generator task, preset) and its tokenizer (task, preset)
SIZES: dict[str, dict[str, tuple[str, str]]] = {
    "full": {
        "var_d16": ("var", "d16"),
        "var_d30": ("var", "d30"),
        "msvq": ("msvq", "var_vae_ch160v4096z32"),
        "raster": ("gpt", "B"),
        "ear": ("gpt", "ear_B"),
        "vq": ("tokenizer", "llamagen_vq16"),
        "actvar_budget": ("actvar", "d16"),
    },
    "debug": {
        "var_d16": ("var", "debug"),
        "var_d30": ("var", "debug"),
        "msvq": ("msvq", "debug"),
        "raster": ("gpt", "debug_raster"),
        "ear": ("gpt", "debug"),
        "vq": ("tokenizer", "debug"),
        "actvar_budget": ("actvar", "debug"),
    },
}
SMOKE = ["--device", "cpu", "--sizes", "debug", "--batch", "2", "--repeats", "1", "--parts",
         "peak,var,ear_vs_raster,actvar,compiled", "--peak-shape", "64", "--no-latency",
         "--compile-backend", "eager", "--compile-mode", "", "--compile-batches", "2"]  # fmt: skip


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    p.add_argument("--sizes", choices=sorted(SIZES), default="full", help="full: the official sizes")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--budget-s", type=float, default=450, help="time for all parts; later parts are skipped")
    p.add_argument("--peak-shape", type=int, default=8192, help="side of the square peak matmul")
    p.add_argument("--no-latency", action="store_true", help="skip the batch-1 rows of ear_vs_raster")
    p.add_argument("--compile-backend", default="inductor", help="compiled: torch.compile backend")
    p.add_argument(
        "--compile-mode", default="reduce-overhead", help="compiled: torch.compile mode ('' = default)"
    )
    p.add_argument("--compile-batches", default="1,64", help="compiled: batch sizes")


def _log(msg: str) -> None:
    print(f"[gpu {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _build(task: str, preset: str, device: torch.device, **overrides: Any) -> torch.nn.Module:
    """A random-weight model built straight on `device` (a 2B-parameter VAR-d30 initialises in seconds on a
    GPU, minutes on its host's CPU)."""
    from argen.training.tasks import get_task

    torch.manual_seed(0)
    try:
        with device:
            model = get_task(task).build_model({"preset": preset, **overrides})
    except (RuntimeError, TypeError, NotImplementedError):  # a builder that insists on CPU tensors
        model = get_task(task).build_model({"preset": preset, **overrides})
    return model.to(device).eval()


def _tokenizer_for(model: torch.nn.Module, task: str, preset: str, device: torch.device) -> torch.nn.Module:
    """The tokenizer preset with the generator's vocabulary (the debug presets differ)."""
    field = "codebook_size" if task == "tokenizer" else "vocab_size"
    tok = _build(task, preset, device)
    vocab = model.config.vocab_size if hasattr(model.config, "vocab_size") else model.config.var.vocab_size
    if tok.config.vocab_size != vocab:
        tok = _build(task, preset, device, **{field: vocab})
    return tok


def _pipeline(model, tokenizer, name: str, dtype: str, batch: int, schedule: int | None = None):
    from argen.sampling.pipeline import GenerateConfig, Pipeline

    cfg = GenerateConfig(name, "-", schedule, batch_size=batch, device=str(_device_of(model)), dtype=dtype)
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    return Pipeline(model.to(dt), tokenizer.to(dt), cfg)


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _interleaved(pipes: dict[str, Any], batch: int, repeats: int, peak: float | None) -> dict[str, Any]:
    """Each pipeline: one warm-up call, then `repeats` rounds calling each in turn; medians."""
    device = _device_of(next(iter(pipes.values())).model)
    labels = torch.arange(batch) % next(iter(pipes.values())).num_classes
    times: dict[str, list[float]] = {name: [] for name in pipes}
    mem: dict[str, int] = {}
    for name, pipe in pipes.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        pipe.sample(labels)  # warm-up: kernels chosen, caches allocated
        if device.type == "cuda":
            mem[name] = torch.cuda.max_memory_allocated(device)
    for _ in range(repeats):
        for name, pipe in pipes.items():
            times[name].append(pipe.sample(labels).seconds)  # synchronised on CUDA
    rows = {}
    for name, pipe in pipes.items():
        med = statistics.median(times[name])
        cost = pipe.cost()
        row = {
            "batch": batch,
            "median_s": med,
            "img_per_s": batch / med,
            "times_s": times[name],
            "passes": cost.get("steps"),
            "gflops_per_image": cost["gflops"],
            "params_M": sum(p.numel() for p in pipe.model.parameters()) / 1e6,
            "peak_mem_GiB": mem[name] / 2**30 if name in mem else None,
        }
        if peak:
            row["mfu"] = cost["gflops"] * 1e9 * row["img_per_s"] / peak
        rows[name] = row
        _log(f"  {name} b{batch}: {row['img_per_s']:.2f} img/s" + (f", MFU {row['mfu']:.3f}" if peak else ""))
    return rows


def _part_tests(args: argparse.Namespace, budget_s: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "tests/test_cuda.py", "-q", "-p", "no:cacheprovider"]
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=budget_s)
    except subprocess.TimeoutExpired as e:
        return {"error": f"timed out after {budget_s:.0f} s", "tail": str(e.stdout or "")[-2000:]}
    text = out.stdout + out.stderr
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors)", text)}
    return {
        "command": " ".join(cmd[1:]),
        "returncode": out.returncode,
        "counts": counts,
        "failed": re.findall(r"FAILED (\S+)", text),
        "tail": text[-3000:],
    }


def _part_peak(args: argparse.Namespace, budget_s: float) -> dict[str, Any]:
    from argen.device import measure_peak

    n = args.peak_shape
    return measure_peak(args.device, ["fp32", "bf16"], [(n, n, n)], repeats=10)


def _part_var(args: argparse.Namespace, budget_s: float, peak: float | None) -> dict[str, Any]:
    sizes, device = SIZES[args.sizes], torch.device(args.device)
    out = {}
    for name in ("var_d16", "var_d30"):
        model = _build(*sizes[name], device)
        tok = _tokenizer_for(model, *sizes["msvq"], device)
        pipe = _pipeline(model, tok, name, args.dtype, args.batch)
        out.update(_interleaved({name: pipe}, args.batch, args.repeats, peak))
        del model, tok, pipe
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def _part_ear_vs_raster(args: argparse.Namespace, budget_s: float, peak: float | None) -> dict[str, Any]:
    sizes, device = SIZES[args.sizes], torch.device(args.device)
    raster = _build(*sizes["raster"], device)
    ear = _build(*sizes["ear"], device)
    # each with a VQ of its own codebook (LlamaGen's 16384 codes, EAR's 8192): same decoder cost
    tok_raster = _tokenizer_for(raster, *sizes["vq"], device)
    tok_ear = _tokenizer_for(ear, *sizes["vq"], device)
    pipes = {
        "raster_B": _pipeline(raster, tok_raster, "raster_B", args.dtype, args.batch),
        "ear_B_31": _pipeline(ear, tok_ear, "ear_B_31", args.dtype, args.batch),
        "ear_B_8": _pipeline(ear, tok_ear, "ear_B_8", args.dtype, args.batch, schedule=8),
    }
    out: dict[str, Any] = {f"b{args.batch}": _interleaved(pipes, args.batch, args.repeats, peak)}
    rows = out[f"b{args.batch}"]
    out[f"speedup_b{args.batch}"] = {
        k: rows["raster_B"]["median_s"] / rows[k]["median_s"] for k in ("ear_B_31", "ear_B_8")
    }
    if not args.no_latency:
        for pipe in pipes.values():
            pipe.cfg.batch_size = 1
        rows1 = _interleaved(pipes, 1, args.repeats, peak)
        out["b1"] = rows1
        out["speedup_b1"] = {
            k: rows1["raster_B"]["median_s"] / rows1[k]["median_s"] for k in ("ear_B_31", "ear_B_8")
        }
    return out


def _part_actvar(args: argparse.Namespace, budget_s: float, peak: float | None) -> dict[str, Any]:
    from argen.models.actvar import ActVAR, actvar_config

    sizes, device = SIZES[args.sizes], torch.device(args.device)
    dense = _build(*sizes["var_d16"], device)
    sparse = ActVAR.from_dense(
        dense, actvar_config(sizes["actvar_budget"][1], var=dense.config, kmeans_iters=5)
    )
    tok = _tokenizer_for(dense, *sizes["msvq"], device)
    pipes = {
        "actvar_d16": _pipeline(sparse.eval(), tok, "actvar_d16", args.dtype, args.batch),
        "var_d16": _pipeline(dense, tok, "var_d16", args.dtype, args.batch),
    }
    rows = _interleaved(pipes, args.batch, args.repeats, peak)
    return {
        "rows": rows,
        "time_ratio": rows["actvar_d16"]["median_s"] / rows["var_d16"]["median_s"],
        "flops_ratio": rows["actvar_d16"]["gflops_per_image"] / rows["var_d16"]["gflops_per_image"],
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_sample(proc, model, labels: torch.Tensor, device: torch.device) -> tuple[float, torch.Tensor]:
    """Seconds of one `proc.sample` (synchronised), and its tokens."""
    _sync(device)
    t0 = time.perf_counter()
    tokens = proc.sample(model, labels).tokens_BL
    _sync(device)
    return time.perf_counter() - t0, tokens


def _part_compiled(args: argparse.Namespace, budget_s: float, peak: float | None) -> dict[str, Any]:
    from argen.sampling.ar import GenerationProcess
    from argen.sampling.logits import SamplingConfig

    sizes, device = SIZES[args.sizes], torch.device(args.device)
    dt = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    mode = args.compile_mode or None
    out: dict[str, Any] = {"backend": args.compile_backend, "mode": mode}
    for name, key, schedule in (("raster_B", "raster", None), ("ear_B_8", "ear", 8)):
        model = _build(*sizes[key], device).to(dt)
        eager = GenerationProcess.for_model(model, SamplingConfig(cfg_scale=2.0), schedule=schedule)
        comp = GenerationProcess(eager.order, eager.sampling, True, args.compile_backend, mode)
        for batch in _ints(args.compile_batches):
            labels = torch.arange(batch, device=device) % model.config.num_classes
            timed = functools.partial(_timed_sample, model=model, labels=labels, device=device)

            first_s, _ = timed(comp)  # compiles (and, with CUDA graphs, warms up)
            for _ in range(2):  # CUDA graph trees record on a later call
                timed(comp)
            timed(eager)
            times: dict[str, list[float]] = {"eager": [], "compiled": []}
            for _ in range(args.repeats):
                t, tok_eager = timed(eager)
                times["eager"].append(t)
                t, tok_comp = timed(comp)
                times["compiled"].append(t)
            med = {k: statistics.median(v) for k, v in times.items()}
            row = {
                "first_call_s": first_s,
                "eager_s": med["eager"],
                "compiled_s": med["compiled"],
                "speedup": med["eager"] / med["compiled"],
                "ms_per_pass": {k: 1e3 * v / eager.order.num_steps for k, v in med.items()},
                "tokens_equal_to_eager": float((tok_eager == tok_comp).float().mean()),
                "times_s": times,
            }
            out[f"{name}_b{batch}"] = row
            _log(f"  {name} b{batch}: eager {med['eager']:.3f} s, compiled {med['compiled']:.3f} s "
                 f"({row['speedup']:.2f}x; first call {first_s:.1f} s)")  # fmt: skip
    return out


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


# each part's share of the remaining budget, and what it needs from earlier parts
SHARES = {"tests": 0.3, "peak": 0.1, "var": 0.5, "ear_vs_raster": 0.6, "actvar": 0.5, "compiled": 1.0}


def run(args: argparse.Namespace) -> dict[str, Any]:
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"unknown part(s) {unknown}: choose from {', '.join(PARTS)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but torch sees no CUDA GPU here (use --smoke or --device cpu)")
    result: dict[str, Any] = {"device": args.device, "dtype": args.dtype, "batch": args.batch, "parts": {}}
    if args.device.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name(args.device)
    t_end = time.perf_counter() + args.budget_s
    peak: float | None = None
    for part in parts:
        left = t_end - time.perf_counter()
        if left <= 5:
            result["parts"][part] = {"skipped": "time budget spent"}
            continue
        budget = max(left * SHARES[part], min(60.0, left))
        _log(f"{part} (up to {budget:.0f} s of {left:.0f} s left)")
        t0 = time.perf_counter()
        try:
            fn: Callable[..., dict[str, Any]] = globals()[f"_part_{part}"]
            res = fn(args, budget) if part in ("tests", "peak") else fn(args, budget, peak)
        except Exception as e:  # one part's failure must not lose the others' numbers
            res = {"error": f"{type(e).__name__}: {e}"}
        res["seconds"] = round(time.perf_counter() - t0, 1)
        if part == "peak" and "dtypes" in res:
            peak = res["dtypes"][args.dtype]["peak_flops_per_s"]
        result["parts"][part] = res
        _log(f"{part} done in {res['seconds']} s" + (f": {res['error']}" if "error" in res else ""))
        if args.out:  # what was measured so far survives a run cut short
            atomic_write_text(args.out, json.dumps({"partial": True, "result": result}, indent=2) + "\n")
    return result


def check(result: dict[str, Any]) -> None:
    parts = result["parts"]
    assert all("error" not in p for p in parts.values()), {k: p.get("error") for k, p in parts.items()}
    assert parts["peak"]["dtypes"]["bf16"]["peak_flops_per_s"] > 0
    for name in ("var_d16", "var_d30"):
        assert parts["var"][name]["img_per_s"] > 0 and parts["var"][name]["mfu"] > 0
    ear = parts["ear_vs_raster"]["b2"]
    assert ear["raster_B"]["passes"] == 16 and ear["ear_B_8"]["passes"] == 8  # debug grid 4x4
    assert 0 < parts["actvar"]["flops_ratio"] < 1 and parts["actvar"]["time_ratio"] > 0
    for row in ("raster_B_b2", "ear_B_8_b2"):  # the eager backend captures without compiling: same tokens
        assert (
            parts["compiled"][row]["tokens_equal_to_eager"] == 1.0 and parts["compiled"][row]["speedup"] > 0
        )
