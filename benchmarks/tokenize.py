"""`argen tokenize` before and after its fast path (issue 26), side by side: wall, CPU and kernel time, codes.

The old code is `git archive BASE` (default: the last commit before the fast path) unpacked in a work folder.
Each round runs the CLI of the old tree and of this one on the first N Fashion-MNIST train images (IDX files
cut to N in the work folder), then both on 64 images (the start-up both pay: imports, model load), each in a
fresh process, in turn (`argen.eval.bench.side_by_side`, medians), so load from other jobs falls on all alike.
The codes of the two trees are compared. With --full, this tree then tokenizes all 60k train images once,
its codes compared with a reference made by the old code (--reference TOKENIZER=FILE, or made here).
The smoke run compares this tree with its own last commit (--base HEAD): the codes must be identical.
Backs the tokenize speed numbers of results/cpu/tokenize_speed.json and docs/02-training.md.

    python -m benchmarks tokenize --threads 1 --cli-threads 2,1 --images 8192 --rounds 3 --full \\
        --reference vq2_fmnist=data/vq2_train_ref.npz --reference msvq2_fmnist=data/msvq2_train_ref.npz \\
        --out results/cpu/tokenize_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from argen.data import FASHION_MNIST_DIR, _find_idx, read_idx
from argen.eval.bench import side_by_side

SMOKE = ["--base", "HEAD", "--tokenizers", "vq2_fmnist", "--images", "256", "--rounds", "1"]
SMOKE += ["--cli-threads", "1"]

ROOT = Path(__file__).resolve().parents[1]
BASE = "be6c892"  # the last commit before the fast path
STARTUP_IMAGES = 64


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", default=BASE, help=f"git revision of the old code (default: {BASE})")
    p.add_argument("--tokenizers", default="vq2_fmnist,msvq2_fmnist", help="comma-separated")
    p.add_argument("--images", type=int, default=8192, help="images per timed call")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--cli-threads", default="2,1", help="torch threads of the timed CLI runs, comma-separated"
    )
    p.add_argument("--full", action="store_true", help="also tokenize all 60k train images once and compare")
    p.add_argument("--full-threads", type=int, default=2, help="torch threads of the --full runs")
    p.add_argument("--reference", action="append", default=[], metavar="TOKENIZER=FILE", help="for --full")
    p.add_argument("--work", help="work folder (default: a temporary one)")


def export_tree(rev: str, dest: Path) -> Path:
    """The repository at `rev`, unpacked into `dest` (no checkout, the repository is left as it is)."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX file of uint8 values (the format `argen.data.read_idx` reads)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def fmnist_subset(dest: Path, n: int) -> Path:
    """A Fashion-MNIST root holding the first n train images and labels."""
    dest.mkdir(parents=True, exist_ok=True)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        write_idx(dest / stem, read_idx(_find_idx(FASHION_MNIST_DIR, stem))[:n])
    return dest


def tokenize(tree: Path, threads: int, tokenizer: str, out: Path, root: Path | None = None) -> Path:
    """`argen --threads T tokenize` run with the code of `tree` in a fresh process; returns `out`."""
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "argen", "--threads", str(threads), "tokenize", "--tokenizer", tokenizer]
    cmd += ["--out", str(out), "--device", "cpu"] + (["--root", str(root)] if root else [])
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run(cmd, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def compare(a: Path, b: Path) -> dict[str, Any]:
    with np.load(a) as fa, np.load(b) as fb:
        codes_a, codes_b = fa["codes"], fb["codes"]
        same_labels = bool(np.array_equal(fa["labels"], fb["labels"]))
    mismatches = int((codes_a != codes_b).sum()) if codes_a.shape == codes_b.shape else -1
    return {
        "codes": list(codes_b.shape),
        "codes_identical": mismatches == 0,
        "code_mismatches": mismatches,
        "labels_identical": same_labels,
    }


def seconds(wall_s: float, cpu_s: float, sys_s: float) -> dict[str, float]:
    return {"wall_s": round(wall_s, 2), "cpu_s": round(cpu_s, 2), "sys_s": round(sys_s, 2)}


def subset_rows(args: argparse.Namespace, old: Path, work: Path) -> dict[str, Any]:
    root, tiny = fmnist_subset(work / "subset", args.images), fmnist_subset(work / "tiny", STARTUP_IMAGES)
    rows: dict[str, Any] = {}
    trees = {"old": old, "new": ROOT}
    for tok in args.tokenizers.split(","):
        for threads in [int(t) for t in args.cli_threads.split(",")]:
            calls = {
                f"{name}{part}": partial(tokenize, tree, threads, tok, work / f"{tok}_{name}{part}.npz", data)
                for part, data in (("", root), ("_startup", tiny))
                for name, tree in trees.items()
            }
            t = side_by_side(calls, args.rounds, warmup=False)  # fresh processes: nothing to warm
            net = {name: t[name].cpu_s - t[f"{name}_startup"].cpu_s for name in trees}
            net_wall = {name: t[name].wall_s - t[f"{name}_startup"].wall_s for name in trees}
            row: dict[str, Any] = {name: seconds(x.wall_s, x.cpu_s, x.sys_s) for name, x in t.items()}
            row.update(
                wall_ratio=round(t["old"].wall_s / t["new"].wall_s, 2),
                cpu_ratio=round(t["old"].cpu_s / t["new"].cpu_s, 2),
                cpu_ratio_less_startup=round(net["old"] / net["new"], 2),
                wall_ratio_less_startup=round(net_wall["old"] / net_wall["new"], 2),
                ms_cpu_per_image={name: round(1e3 * net[name] / args.images, 2) for name in trees},
                load_avg_1min_after=round(os.getloadavg()[0], 2),
                **compare(t["old"].result, t["new"].result),
            )
            rows.setdefault(tok, {})[f"threads_{threads}"] = row
            print(
                tok, threads, json.dumps(row), file=sys.stderr, flush=True
            )  # a long run's rows as they come
    return rows


def tokenize_once(tree: Path, threads: int, tokenizer: str, out: Path) -> tuple[dict[str, float], Path]:
    """`tokenize` on all train images, timed once (no warm-up: a full run is long); with the largest peak
    resident size of this process's children so far (the full runs come last and are the largest)."""
    w0, t0 = time.perf_counter(), os.times()
    tokenize(tree, threads, tokenizer, out)
    t1 = os.times()
    cpu = (t1.children_user + t1.children_system) - (t0.children_user + t0.children_system)
    row: dict[str, Any] = seconds(time.perf_counter() - w0, cpu, t1.children_system - t0.children_system)
    row["children_max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    return row, out


def full_rows(args: argparse.Namespace, old: Path, work: Path) -> dict[str, Any]:
    references = dict(r.split("=", 1) for r in args.reference)
    rows = {}
    for tok in args.tokenizers.split(","):
        row: dict[str, Any] = {
            "images": len(read_idx(_find_idx(FASHION_MNIST_DIR, "train-labels-idx1-ubyte")))
        }
        reference = Path(references[tok]) if tok in references else None
        if reference is None:
            row["old"], reference = tokenize_once(old, args.full_threads, tok, work / f"{tok}_old.npz")
        row["new"], out = tokenize_once(ROOT, args.full_threads, tok, work / f"{tok}.npz")
        row.update(reference=str(reference), **compare(reference, out))
        rows[tok] = row
        print(tok, "full", json.dumps(row), file=sys.stderr, flush=True)
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        old = export_tree(args.base, work / "old")
        base = subprocess.run(
            ["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True, text=True
        )
        report: dict[str, Any] = {
            "base": args.base,
            "base_commit": base.stdout.strip(),
            "threads": {"timed": args.cli_threads, "full": args.full_threads},
            "dtype": "fp32 (tokenizer weights and arithmetic: the tokenize command has no dtype)",
            "time": "process CPU time (user + sys, all threads) and wall-clock of each CLI run, medians of "
            f"interleaved rounds; *_startup = the same CLI on {STARTUP_IMAGES} images (imports, model load)",
            "images": args.images,
            "rounds": args.rounds,
            "subset": subset_rows(args, old, work),
        }
        if args.full:
            report["full"] = full_rows(args, old, work)
    return report


def check(result: dict[str, Any]) -> None:
    (row,) = result["subset"]["vq2_fmnist"].values()
    assert row["codes_identical"] and row["code_mismatches"] == 0 and row["labels_identical"]
    assert row["codes"][0] == result["images"] == 256  # both trees tokenized the whole subset
    for name in ("old", "new", "old_startup", "new_startup"):
        assert row[name]["wall_s"] > 0 and row[name]["cpu_s"] > 0, name
    assert row["wall_ratio"] > 0 and row["cpu_ratio"] > 0
