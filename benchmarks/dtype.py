"""bf16 vs fp32 side by side in one run: sampling img/s and MFU, training img/s, quality (issue 13).

Every ratio comes from calls interleaved dtype by dtype (fp32, bf16, fp32, bf16, ...) in one process, medians
reported, so load from other processes on a shared machine hits both dtypes alike. MFU = achieved model
FLOP/s (analytic, `argen flops`) / this machine's matmul peak in that dtype (`argen peak`, measured first).
Modes (`--mode`, comma-separated):
  sample   img/s and MFU of a set of models (`--set`: the shipped ones, random-weight 384-wide presets,
           VAR-d16)
  train    img/s of fresh training runs of --config files (steps after --skip); where a config's token file
           is missing (a clean clone), a stand-in made on first use: the test split encoded by the shipped
           tokenizer of that kind (the codes do not change training speed), under the benchmarks' work folder
  quality  class accuracy of the same N samples (same seeds) of a shipped model drawn in each dtype
Backs "bf16 against fp32" in README.md and docs/05-benchmarks-results.md (JSON in results/dtype/).

    python -m benchmarks dtype --threads 1 --mode sample --set shipped --batch 16 --out results/dtype/s.json
    python -m benchmarks dtype --threads 1 --mode sample --set presets384 --batch 16 --repeats 2
    python -m benchmarks dtype --threads 1 --mode train --config configs/ear3_fmnist.json --steps 30
    python -m benchmarks dtype --mode quality --n 200
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from argen.device import SHAPES, bf16_is_fast, measure_peak
from argen.sampling.pipeline import GenerateConfig, Pipeline
from benchmarks import common
from benchmarks.sampling import SIZES, model_file

SMOKE = ["--mode", "sample,train", "--set", "debug", "--batch", "2", "--repeats", "1", "--warmup", "0"]
SMOKE += ["--config", "configs/vq_fmnist.json", "--steps", "3", "--skip", "1", "--train-batch", "2"]
SMOKE += ["--peak-shapes", "64x64x64"]

DTYPES = ("fp32", "bf16")
MODES = ("sample", "train", "quality")
_F, _D = SIZES["fmnist"], SIZES["debug"]  # random-weight model specs, (task, preset, overrides)
# set -> name -> (model, tokenizer ("" = the one the model records), schedule)
SETS: dict[str, dict[str, tuple[Any, Any, int | None]]] = {
    "shipped": {
        "raster": ("raster_fmnist", "", None),
        "EAR 31": ("ear_fmnist", "", None),
        "EAR any 8": ("ear_any_fmnist", "", 8),
        "VAR": ("var_fmnist", "", None),
        "ActVAR": ("actvar_fmnist", "", None),
    },
    "presets384": {
        "raster 384": (_F["raster"], _F["vq"], None),
        "EAR 384 31": (_F["ear"], _F["vq"], None),
        "EAR 384 8": (_F["ear"], _F["vq"], 8),
        "VAR fmnist": (_F["var"], _F["msvq"], None),
    },
    "var_d16": {"VAR-d16": (("var", "d16", {}), ("msvq", "var_vae_ch160v4096z32", {}), None)},
    "debug": {  # the smoke run's
        "raster debug": (_D["raster"], _D["vq"], None),
        "EAR debug 4": (_D["ear"], _D["vq"], 4),
        "VAR debug": (_D["var"], _D["msvq"], None),
    },
}
# a config's token file -> the shipped tokenizer of that kind, whose codes of the test split stand in for it
TOKEN_FILES = {"data/vq2_train.npz": "vq2_fmnist", "data/msvq2_train.npz": "msvq2_fmnist"}


def _modes(text: str) -> list[str]:
    modes = text.split(",")
    if not set(modes) <= set(MODES):
        raise argparse.ArgumentTypeError(f"modes are {', '.join(MODES)}; got {text}")
    return modes


def _shapes(text: str) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in shape.lower().split("x")) for shape in text.split(",")]


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", type=_modes, default=["sample"], help="sample, train, quality; comma-separated")
    p.add_argument("--set", default="shipped", choices=sorted(SETS), help="sample: which models")
    p.add_argument("--only", nargs="*", help="sample: only these names of the set; quality: the model")
    p.add_argument("--batch", type=int, default=16, help="sample / quality: images per batch")
    p.add_argument("--repeats", type=int, default=3, help="sample: calls per dtype; train: runs per dtype")
    p.add_argument("--warmup", type=int, default=1, help="sample: untimed calls per dtype")
    p.add_argument("--config", nargs="*", default=[], help="train: configs/*.json")
    p.add_argument("--steps", type=int, default=30, help="train: steps per run")
    p.add_argument("--train-batch", type=int, help="train: batch size (default: the config's)")
    p.add_argument("--skip", type=int, default=5, help="train: warm-up steps left out of img/s")
    p.add_argument("--n", type=int, default=200, help="quality: samples per dtype (classes cycled)")
    p.add_argument("--dtypes", type=lambda s: s.split(","), default=list(DTYPES), help="default: fp32,bf16")
    p.add_argument("--peak-shapes", type=_shapes, default=list(SHAPES), help="MxKxN matmuls of the peak")
    p.add_argument("--note", default="", help="free text stored in the JSON (e.g. machine load)")


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


def _ratio(row: dict[str, Any], dtypes: list[str]) -> None:
    if set(DTYPES) <= set(dtypes):
        row["bf16_over_fp32"] = row["bf16"]["img_per_s"] / row["fp32"]["img_per_s"]


def bench_sample(args: argparse.Namespace, peaks: dict[str, float]) -> dict[str, Any]:
    labels = torch.arange(args.batch) % 10
    rows = {}
    for name, (model, tok, schedule) in SETS[args.set].items():
        if args.only and name not in args.only:
            continue
        model, tok = model_file(model), model_file(tok)
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
        _ratio(row, args.dtypes)
        rows[name] = row
        mfu = ", ".join(
            f"{dt} {row[dt]['img_per_s']:.2f} img/s MFU {row[dt]['mfu']:.3f}" for dt in args.dtypes
        )
        print(f"{name}: {mfu}", file=sys.stderr, flush=True)
    return {
        "set": args.set,
        "batch": args.batch,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "rows": rows,
    }


def _token_file(root: str) -> str:
    """The config's token file, or where it is missing its stand-in (made on first use)."""
    if Path(root).exists():
        return root
    from argen.cli import main

    stand_in = common.WORK / f"{TOKEN_FILES[root].removesuffix('_fmnist')}_test.npz"
    if not stand_in.exists():
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.redirect_stdout(sys.stderr):
            main(["tokenize", "--tokenizer", TOKEN_FILES[root], "--split", "test", "--out", str(stand_in)])
    return str(stand_in)


def _train_rate(cfg_path: str, precision: str, args: argparse.Namespace, out: Path) -> float:
    """img/s over steps skip+1..steps of a fresh run (the first steps warm allocators and caches)."""
    from argen.config import TrainConfig, load_config
    from argen.training.loop import train

    sets = [f"steps={args.steps}", "log_every=1", "ckpt_every=0", f"precision={precision}", f"out_dir={out}"]
    sets += [f"batch_size={args.train_batch}"] if args.train_batch else []
    root = load_config(TrainConfig, cfg_path, []).data.root
    if root in TOKEN_FILES:  # the configs' full train-split token files, or the test split's
        sets.append(f"data.root={_token_file(root)}")
    cfg = load_config(TrainConfig, cfg_path, sets)
    with contextlib.redirect_stdout(sys.stderr):  # the run's log lines; stdout is the report's
        train(cfg, resume="never")
    recs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    t = {r["step"]: r["step"] * cfg.batch_size / r["img_per_s"] for r in recs}  # cumulative seconds
    return (args.steps - args.skip) * cfg.batch_size / (t[args.steps] - t[args.skip])


def bench_train(args: argparse.Namespace) -> dict[str, Any]:
    rows = {}
    for cfg_path in args.config:
        rates: dict[str, list[float]] = {dt: [] for dt in args.dtypes}
        for _ in range(args.repeats):
            for dt in args.dtypes:  # interleaved, each a fresh run
                common.WORK.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=common.WORK) as tmp:
                    rates[dt].append(_train_rate(cfg_path, dt, args, Path(tmp) / "run"))
        row: dict[str, Any] = {
            dt: {"img_per_s": statistics.median(rates[dt]), "runs": rates[dt]} for dt in args.dtypes
        }
        _ratio(row, args.dtypes)
        rows[cfg_path] = row
        print(cfg_path, json.dumps(row), file=sys.stderr, flush=True)
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
    return {"model": model, "n": args.n, "rows": rows}


def run(args: argparse.Namespace) -> dict[str, Any]:
    peak = measure_peak("cpu", args.dtypes, args.peak_shapes)
    peaks = {dt: peak["dtypes"][dt]["peak_flops_per_s"] for dt in args.dtypes}
    out: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "dtypes": args.dtypes,
        "peak": peak,
        "auto_dtype": "bf16" if bf16_is_fast("cpu") else "fp32",
        "note": args.note,
    }
    for mode in args.mode:
        out[mode] = {"sample": bench_sample, "train": bench_train, "quality": quality}[mode](
            *((args, peaks) if mode == "sample" else (args,))
        )
    return out


def check(result: dict[str, Any]) -> None:
    sampled = result["sample"]["rows"]
    assert list(sampled) == list(SETS["debug"])
    for name, row in sampled.items():
        assert row["gflops_per_image"] > 0, name
        for dt in DTYPES:
            assert row[dt]["img_per_s"] > 0 and 0 < row[dt]["mfu"] < float("inf"), (name, dt)
        assert row["bf16_over_fp32"] > 0, name
    (trained,) = result["train"]["rows"].values()
    for dt in DTYPES:
        assert trained[dt]["img_per_s"] > 0 and len(trained[dt]["runs"]) == 1, dt
