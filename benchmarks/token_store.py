"""Token store acceptance (issue 16): same bytes on 1 and 2 ranks and after a kill, reader and trainer RSS.

On a generated ImageFolder (blocky 18-24 px images in 10 classes) and a random debug VQ, CPU only:
1. `argen tokenize --views ten_crop` on 1 process and on `--ranks` gloo ranks (torchrun): same bytes.
2. A run killed part-way, then rerun: same bytes again. With `--ranks` >= 2 the whole torchrun group gets a
   SIGKILL from outside after `--kill-after` shards; with `--ranks 1` the tokenize process SIGKILLs itself in
   the middle of writing shard `--kill-after` (its temporary file left behind), which is deterministic.
3. Peak RSS: a process reading one view of every item through the trainer's batches (one epoch), and a
   training run over one epoch on the store against the same run on a store 1/8 the size (`--no-train-epoch`
   skips it); the reader again on a synthetic store of ImageNet's shape (`--synthetic-items` x 10 views x
   256 tokens; 0 skips it).
Every child runs with OMP_NUM_THREADS=1; timings are wall-clock, process start included, on whatever else
the machine was doing. Backs the token-store paragraph of docs/02-training.md.

    python -m benchmarks token_store --images 20000 --out results/cpu/token_store.json
    python -m benchmarks token_store --images 2000 --synthetic-items 0 --work /tmp/argen_store
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common

SMOKE = [
    "--images",
    "40",
    "--shard-size",
    "8",
    "--ranks",
    "1",
    "--kill-after",
    "2",
    "--synthetic-items",
    "0",
    "--no-train-epoch",
]

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
STORE_FILES = ("codes.npy", "labels.npy", "meta.json")

# `argen tokenize ARGS` that SIGKILLs its own process in the middle of writing shard number argv[1]
SELF_KILL = """
import os, signal, sys
import argen.token_store as ts
from argen.cli import main

after, shards, real = int(sys.argv[1]), [], ts.atomic_write

def atomic_write(path, write):
    if str(path).endswith(".npz"):
        shards.append(path)
        if len(shards) > after:
            return real(path, lambda tmp: (write(tmp), os.kill(os.getpid(), signal.SIGKILL)))
    return real(path, write)

ts.atomic_write = atomic_write
main(sys.argv[2:])
"""

READER = """
import sys, torch
from argen.config import DataConfig, TrainConfig
from argen.distributed import DistInfo
from argen.training.loop import step_batches
from argen.training.objectives import gpt_dataset

def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))

before = status("VmRSS")
batch = int(sys.argv[2])
cfg = TrainConfig(data=DataConfig(source="tokens", root=sys.argv[1]), batch_size=batch, seed=0)
ds = gpt_dataset(cfg)
batches = step_batches(ds, cfg, DistInfo(0, 1, 0, torch.device("cpu")), 0)
total = int(next(batches)[0][0].sum())
warm = status("VmHWM")  # after the first batch: code pages of the read path are in
total += sum(int(next(batches)[0][0].sum()) for _ in range(len(ds) // batch - 1))
print(status("VmHWM") - before, status("VmHWM") - warm, status("VmHWM"))
"""

TRAINER = """
import sys
from argen.config import DataConfig, OptimConfig, TrainConfig
from argen.training.loop import train

def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))

cfg = TrainConfig(task="gpt", model={"preset": "debug", "grid": 8, "n_layer": 1}, steps=int(sys.argv[3]),
                  data=DataConfig(source="tokens", root=sys.argv[1]), batch_size=int(sys.argv[4]),
                  ckpt_every=0, log_every=1000, precision="fp32", device="cpu", out_dir=sys.argv[2],
                  resume="never", optim=OptimConfig(warmup_steps=0))
train(cfg)
print(status("VmHWM"))
"""


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--work", help="scratch folder, emptied first (default: ARGEN_BENCH_WORK/token_store)")
    p.add_argument("--shard-size", type=int, default=1024)
    p.add_argument("--ranks", type=int, default=2, help="gloo ranks of the multi-rank runs; 1 skips them")
    p.add_argument("--kill-after", type=int, default=8, help="shards written before the kill")
    p.add_argument("--synthetic-items", type=int, default=320_000, help="items of a (N, 10, 256) store")
    p.add_argument(
        "--train-epoch", action=argparse.BooleanOptionalAction, default=True, help="the trainer RSS part"
    )


def make_images(root: Path, n: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"class{i % 10:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        h, w = rng.integers(18, 25, 2)
        base = rng.integers(0, 256, (h // 2 + 1, w // 2 + 1, 3), dtype=np.uint8)
        arr = np.kron(base, np.ones((2, 2, 1), np.uint8))[:h, :w]  # blocky, so the codes vary
        Image.fromarray(arr).save(folder / f"{i:06d}.png")


def digest(store: Path) -> dict[str, str]:
    return {f: hashlib.sha256((store / f).read_bytes()).hexdigest()[:16] for f in STORE_FILES}


def tokenize(args: list[str], out: Path, ranks: int, self_kill: int | None = None) -> subprocess.Popen:
    if self_kill is not None:
        launch = [sys.executable, "-c", SELF_KILL, str(self_kill)]
    elif ranks == 1:
        launch = [sys.executable, "-m", "argen"]
    else:
        launch = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(ranks),
        ]
        launch += ["-m", "argen"]
    return subprocess.Popen(
        [*launch, "tokenize", *args, "--out", str(out)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def timed(proc: subprocess.Popen) -> float:
    t0 = time.perf_counter()
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{proc.args[:4]} ... failed with {proc.returncode}: {err.decode()[-2000:]}")
    return time.perf_counter() - t0


def run_python(code: str, *argv: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", code, *argv], env=ENV, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return [int(v) for v in out.stdout.split()]


def kill_and_rerun(args: list[str], out: Path, ranks: int, after: int) -> dict[str, Any]:
    """Kill a tokenize run after `after` shards, count what it left, rerun it to the end."""
    shards = out / "shards"
    if ranks == 1:
        proc = tokenize(args, out, 1, self_kill=after)
        proc.communicate()
        how = f"the process SIGKILLed itself while writing shard {after}"
    else:
        proc = tokenize(args, out, ranks)
        while len(list(shards.glob("*.npz"))) < after:
            if proc.poll() is not None:
                raise RuntimeError(f"the run to kill ended first ({proc.returncode}): give more --images")
            time.sleep(0.2)
        for pid in [
            *children(proc.pid),
            proc.pid,
        ]:  # the ranks first (torchrun starts each in its own session)
            os.kill(pid, signal.SIGKILL)
        proc.wait()
        how = f"SIGKILL of the whole torchrun group after {after} shards"
    res: dict[str, Any] = {
        "kill": how,
        "killed_returncode": proc.returncode,
        "killed_after_shards": len(list(shards.glob("*.npz"))),
        "killed_leftover_tmp_files": len([f for f in shards.iterdir() if ".tmp" in f.name]),
    }
    res["rerun_after_kill_s"] = round(timed(tokenize(args, out, ranks)), 2)
    res["leftover_after_rerun"] = sorted(f.name for f in out.iterdir() if f.name not in STORE_FILES)
    return res


def subset_store(store: Path, out: Path, n: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "codes.npy", np.load(store / "codes.npy", mmap_mode="r")[:n])
    np.save(out / "labels.npy", np.load(store / "labels.npy")[:n])
    meta = json.loads((store / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "num_items": n}))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from argen.models.checkpoints import save_model
    from argen.training.objectives import build_tokenizer

    work = Path(args.work or common.WORK / "token_store")
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    make_images(work / "images", args.images)
    res: dict[str, Any] = {"images": args.images, "ranks": args.ranks, "threads_per_process": 1}
    res["make_images_s"] = round(time.perf_counter() - t0, 2)
    torch.manual_seed(0)
    vq = save_model(build_tokenizer("vq", {"preset": "debug"}).eval(), work / "vq.safetensors")
    tok = ["--tokenizer", str(vq), "--source", "imagefolder", "--root", str(work / "images")]
    tok += ["--image-size", "16", "--views", "ten_crop", "--batch-size", "64"]
    tok += ["--shard-size", str(args.shard_size), "--device", "cpu"]
    res["tokenize_1rank_s"] = round(timed(tokenize(tok, work / "one", 1)), 2)
    if args.ranks > 1:
        res[f"tokenize_{args.ranks}rank_s"] = round(timed(tokenize(tok, work / "two", args.ranks)), 2)
    res.update(kill_and_rerun(tok, work / "killed", args.ranks, args.kill_after))
    res["sha256_1rank"] = digest(work / "one")
    if args.ranks > 1:
        res[f"identical_{args.ranks}rank"] = digest(work / "two") == res["sha256_1rank"]
    res["identical_after_kill"] = digest(work / "killed") == res["sha256_1rank"]
    meta = json.loads((work / "one" / "meta.json").read_text())
    size = (work / "one" / "codes.npy").stat().st_size
    res["store"] = {"shape": meta["shape"], "dtype": meta["dtype"], "codes_npy_bytes": size}
    batch = min(256, args.images // 8)
    res["reader_epoch"] = reader_epoch(work / "one", batch)
    if args.train_epoch:
        res["train_epoch"] = train_epoch(work, batch, size)
    if args.synthetic_items:
        res["synthetic_reader_epoch"] = synthetic_reader(work / "synthetic", args.synthetic_items)
    return res


def train_epoch(work: Path, batch: int, size: int) -> dict[str, Any]:
    """Peak RSS of a one-epoch training run on the store `work/one` and on its first eighth."""
    n = json.loads((work / "one" / "meta.json").read_text())["num_items"]
    steps = n // batch
    small = subset_store(work / "one", work / "small", n // 8)
    big_peak = run_python(TRAINER, str(work / "one"), str(work / "run_big"), str(steps), str(batch))[0]
    small_peak = run_python(TRAINER, str(small), str(work / "run_small"), str(steps), str(batch))[0]
    return {
        "steps": steps,
        "batch": batch,
        "peak_rss_full_store": big_peak,
        "peak_rss_eighth_store": small_peak,
        "difference_vs_store": (big_peak - small_peak) / size,
    }


def reader_epoch(store: Path, batch: int = 256) -> dict[str, Any]:
    """The READER's peak RSS over one epoch of `store`, against the size of its codes."""
    size = (store / "codes.npy").stat().st_size
    t0 = time.perf_counter()
    growth, after_first, peak = run_python(READER, str(store), str(batch))
    return {
        "codes_npy_bytes": size,
        "epoch_read_s": round(time.perf_counter() - t0, 2),
        "peak_rss_bytes": peak,
        "growth_from_start_bytes": growth,
        "growth_after_first_batch_bytes": after_first,
        "growth_from_start_vs_store": growth / size,
        "growth_after_first_batch_vs_store": after_first / size,
    }


def synthetic_reader(store: Path, n: int) -> dict[str, Any]:
    """The READER on an ImageNet-like store (N x 10 views x 256 tokens, random codes), written here."""
    store.mkdir(parents=True)
    codes = np.lib.format.open_memmap(store / "codes.npy", "w+", np.int16, (n, 10, 256))
    rng = np.random.default_rng(0)
    for i in range(0, n, 10_000):
        codes[i : i + 10_000] = rng.integers(0, 4096, codes[i : i + 10_000].shape, dtype=np.int16)
    codes.flush()
    del codes
    np.save(store / "labels.npy", np.arange(n) % 1000)
    (store / "meta.json").write_text(json.dumps({"grid": [16, 16], "num_items": n, "views": "ten_crop"}))
    return {"shape": [n, 10, 256], **reader_epoch(store)}


def check(result: dict[str, Any]) -> None:
    n = result["images"]
    assert result["store"]["shape"] == [n, 10, 64] and result["store"]["dtype"] == "int16", result["store"]
    assert result["identical_after_kill"], "a killed and rerun tokenize gave other bytes"
    assert result["killed_returncode"] == -signal.SIGKILL and result["killed_after_shards"] == 2, result
    assert result["killed_leftover_tmp_files"] == 1, (
        "the kill inside a shard's write leaves its temporary file"
    )
    assert result["leftover_after_rerun"] == [], result["leftover_after_rerun"]
    reader = result["reader_epoch"]
    assert reader["peak_rss_bytes"] > reader["growth_from_start_bytes"] >= 0
    assert reader["growth_after_first_batch_bytes"] >= 0
