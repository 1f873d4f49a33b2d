"""The one runner of `benchmarks/`: find the benchmarks, parse their options, add the machine, write JSON."""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import os
import pkgutil
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

import benchmarks
from argen.device import bf16_units, cpu_model, hardware
from argen.io import atomic_write_text

NOT_BENCHMARKS = {"runner", "common"}


def names() -> list[str]:
    """Every benchmark's name (its module's)."""
    return sorted(
        m.name
        for m in pkgutil.iter_modules(benchmarks.__path__)
        if m.name not in NOT_BENCHMARKS and not m.name.startswith("_")
    )


def load(name: str) -> ModuleType:
    if name not in names():
        raise SystemExit(f"benchmarks: no benchmark {name!r}; there are: {', '.join(names())}")
    module = importlib.import_module(f"benchmarks.{name}")
    for attr in ("add_args", "run", "SMOKE"):
        if not hasattr(module, attr):
            raise SystemExit(f"benchmarks/{name}.py lacks {attr}: a benchmark needs add_args, run and SMOKE")
    return module


def summary(module: ModuleType) -> str:
    return (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def machine() -> dict[str, Any]:
    """What every report says about where it ran: CPU model and its bf16 units, cores, torch threads, load
    (before the run), GPU where there is one, versions, commit."""
    info: dict[str, Any] = {
        **{k: v for k, v in hardware("cpu").items() if k != "device"},
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "commit": _git_commit(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }
    if torch.cuda.is_available():
        info["cuda"] = {
            "device": torch.cuda.get_device_name(0),
            "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
            "bf16_units": bf16_units("cuda:0"),
            "count": torch.cuda.device_count(),
            "cuda_version": torch.version.cuda,
        }
    info["cpu_model"] = cpu_model()
    return info


def parser_for(name: str, module: ModuleType) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m benchmarks {name}",
        description=(module.__doc__ or "").strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--smoke", action="store_true", help=f"tiny run that checks the code (adds: {' '.join(module.SMOKE)})"
    )
    p.add_argument("--out", help="write the JSON report here (default: stdout only)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    module.add_args(p)
    return p


def run(name: str, argv: list[str]) -> dict[str, Any]:
    """Run benchmark `name` with command-line `argv`; returns (and writes to --out) the report."""
    module = load(name)
    p = parser_for(name, module)
    args = p.parse_args(argv)
    if args.smoke:  # the smoke arguments first, so that ones given on the command line win
        args = p.parse_args([*module.SMOKE, *argv])
    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "benchmark": name,
        "command": shlex.join(["python", "-m", "benchmarks", name, *argv]),
        "smoke": args.smoke,
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    t0 = time.perf_counter()
    report["result"] = module.run(args)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    report["load_avg_1min_after"] = os.getloadavg()[0]
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=2, default=str) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "list"):
        print(
            "python -m benchmarks NAME [--smoke] [--out FILE] [--threads N] [options]"
            "   (NAME --help: its options)\n"
        )
        for name in names():
            print(f"  {name:<16} {summary(load(name))}")
        return 0
    report = run(argv[0], argv[1:])
    print(json.dumps(report, indent=2, default=str))
    return 0
