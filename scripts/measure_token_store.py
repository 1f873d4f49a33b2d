"""Acceptance measurements of the token store (issue 16) on a generated ImageFolder, CPU only.

1. `argen tokenize --views ten_crop` of N images on 1 process and on 2 gloo ranks (torchrun): same bytes.
2. The 2-rank run killed (SIGKILL of the whole torchrun group) part-way, then rerun: same bytes again.
3. Peak RSS: a process reading one view of every item through the trainer's batches (one epoch), and a
   training run over one epoch on the store against the same run on a store 1/8 the size.

Usage: python scripts/measure_token_store.py [--images 20000] [--work /tmp/argen_store] > results.json
Every child runs with OMP_NUM_THREADS=1; timings are wall-clock on whatever else the machine was doing.
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

import numpy as np

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
STORE_FILES = ("codes.npy", "labels.npy", "meta.json")


def make_images(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    from PIL import Image

    for i in range(n):
        folder = root / f"class{i % 10:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        h, w = rng.integers(18, 25, 2)
        base = rng.integers(0, 256, (h // 2 + 1, w // 2 + 1, 3), dtype=np.uint8)
        arr = np.kron(base, np.ones((2, 2, 1), np.uint8))[:h, :w]  # blocky, so the codes vary
        Image.fromarray(arr).save(folder / f"{i:06d}.png")


def digest(store: Path) -> dict[str, str]:
    return {f: hashlib.sha256((store / f).read_bytes()).hexdigest()[:16] for f in STORE_FILES}


def tokenize(args: list[str], out: Path, ranks: int) -> subprocess.Popen:
    launch = [sys.executable, "-m", "argen"] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
        "-m", "argen",
    ]  # fmt: skip
    return subprocess.Popen(
        [*launch, "tokenize", *args, "--out", str(out)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
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
    if proc.wait() != 0:
        raise SystemExit(f"{proc.args} failed with {proc.returncode}")
    return time.perf_counter() - t0


READER = """
import sys, torch
from argen.config import DataConfig, TrainConfig
from argen.distributed import DistInfo
from argen.training.loop import step_batches
from argen.training.objectives import gpt_dataset

def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))

before = status("VmRSS")
cfg = TrainConfig(data=DataConfig(source="tokens", root=sys.argv[1]), batch_size=256, seed=0)
ds = gpt_dataset(cfg)
batches = step_batches(ds, cfg, DistInfo(0, 1, 0, torch.device("cpu")), 0)
total = int(next(batches)[0][0].sum())
warm = status("VmHWM")  # after the first batch: code pages of the read path are in
total += sum(int(next(batches)[0][0].sum()) for _ in range(len(ds) // 256 - 1))
print(status("VmHWM") - before, status("VmHWM") - warm, status("VmHWM"))
"""

TRAINER = """
import sys, json
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


def run_python(code: str, *argv: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", code, *argv], env=ENV, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return [int(v) for v in out.stdout.split()]


def subset_store(store: Path, out: Path, n: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "codes.npy", np.load(store / "codes.npy", mmap_mode="r")[:n])
    np.save(out / "labels.npy", np.load(store / "labels.npy")[:n])
    meta = json.loads((store / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "num_items": n}))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--work", default="/tmp/argen_store")
    p.add_argument("--shard-size", type=int, default=1024)
    p.add_argument("--synthetic-items", type=int, default=320_000, help="items of a (N, 10, 256) store")
    a = p.parse_args()
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    make_images(work / "images", a.images)
    res: dict = {"images": a.images, "make_images_s": round(time.perf_counter() - t0, 1)}
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch

    from argen.models.checkpoints import save_model
    from argen.training.objectives import build_tokenizer

    torch.manual_seed(0)
    vq = save_model(build_tokenizer("vq", {"preset": "debug"}).eval(), work / "vq.safetensors")
    args = ["--tokenizer", str(vq), "--source", "imagefolder", "--root", str(work / "images")]
    args += ["--image-size", "16", "--views", "ten_crop", "--batch-size", "64"]
    args += ["--shard-size", str(a.shard_size)]
    args += ["--device", "cpu"]
    res["tokenize_1rank_s"] = round(timed(tokenize(args, work / "one", 1)), 1)
    res["tokenize_2rank_s"] = round(timed(tokenize(args, work / "two", 2)), 1)
    proc = tokenize(args, work / "killed", 2)
    shards = work / "killed" / "shards"
    while len(list(shards.glob("*.npz"))) < 8:  # of 20 shards (20000 images)
        time.sleep(0.2)
    for pid in [*children(proc.pid), proc.pid]:  # the ranks first (torchrun starts each in its own session)
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    res["killed_after_shards"] = len(list(shards.glob("*.npz")))
    res["killed_leftover_tmp_files"] = len([f for f in shards.iterdir() if ".tmp" in f.name])
    res["rerun_after_kill_s"] = round(timed(tokenize(args, work / "killed", 2)), 1)
    d1, d2, d3 = (digest(work / s) for s in ("one", "two", "killed"))
    res["sha256_1rank"] = d1
    res["identical_2rank"], res["identical_after_kill"] = d2 == d1, d3 == d1
    meta = json.loads((work / "one" / "meta.json").read_text())
    size = (work / "one" / "codes.npy").stat().st_size
    res["store"] = {"shape": meta["shape"], "dtype": meta["dtype"], "codes_npy_bytes": size}
    growth, after_first, peak = run_python(READER, str(work / "one"))
    res["reader_epoch"] = {
        "peak_rss_bytes": peak,
        "growth_from_start_bytes": growth,
        "growth_after_first_batch_bytes": after_first,
        "growth_from_start_vs_store": growth / size,
        "growth_after_first_batch_vs_store": after_first / size,
    }
    batch = min(256, a.images // 8)
    steps = a.images // batch
    small = subset_store(work / "one", work / "small", a.images // 8)
    big_peak = run_python(TRAINER, str(work / "one"), str(work / "run_big"), str(steps), str(batch))[0]
    small_peak = run_python(TRAINER, str(small), str(work / "run_small"), str(steps), str(batch))[0]
    res["train_epoch"] = {
        "steps": steps,
        "peak_rss_full_store": big_peak,
        "peak_rss_eighth_store": small_peak,
        "difference_vs_store": (big_peak - small_peak) / size,
    }
    res["synthetic_reader_epoch"] = synthetic_reader(work / "synthetic", a.synthetic_items)
    print(json.dumps(res, indent=2))


def synthetic_reader(store: Path, n: int) -> dict:
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
    size = (store / "codes.npy").stat().st_size
    t0 = time.perf_counter()
    growth, after_first, peak = run_python(READER, str(store))
    return {
        "shape": [n, 10, 256],
        "codes_npy_bytes": size,
        "epoch_read_s": round(time.perf_counter() - t0, 1),
        "peak_rss_bytes": peak,
        "growth_from_start_bytes": growth,
        "growth_from_start_vs_store": growth / size,
        "growth_after_first_batch_vs_store": after_first / size,
    }


if __name__ == "__main__":
    main()
