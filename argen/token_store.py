"""Token store: a tokenized image dataset as memory-mappable `.npy` files, written by rank shards and merged.

A store is a folder:

    codes.npy   (N, A, L) int16 (vocabulary <= 32767) or int32: A stored views (augmentations) of each image
    labels.npy  (N,) int64
    meta.json   grid, views, dtype, tokenizer facts; written after the arrays, so it marks a complete store
    shards/     only while writing: plan.json and one `.npz` per shard of `shard_size` consecutive images

Shards are fixed ranges of image indices and are encoded in the same batches whoever encodes them, so the
bytes do not depend on the number of ranks. Rank r encodes shards r, r + W, ... that are not yet on disk
(each written atomically), so a rerun after a crash keeps the finished shards and redoes only the rest; rank
0 then merges them. `argen.data.TokenDataset` reads the result without loading it.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import platform
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from argen.io import atomic_write, atomic_write_text
from argen.runtime import ENV_OPT_OUT

VIEWS = {"none": 1, "flip": 2, "ten_crop": 10}


class Views(Dataset):
    """Every stored view of each image: items (views_ACHW in [-1, 1], label).

    views: "none" (the image), "flip" (the image and its mirror) or "ten_crop" (the ten crops of
        `argen.data.ten_crop`, LlamaGen's augmentation; needs an ImageFolder).
    """

    def __init__(self, dataset: Dataset, views: str):
        if views not in VIEWS:
            raise ValueError(f"views {views!r}: choose one of {sorted(VIEWS)}")
        if views == "ten_crop" and not hasattr(dataset, "ten_crop_views"):
            raise ValueError("ten_crop views need an imagefolder source; use --views flip or none")
        self.dataset, self.views = dataset, views

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.views == "ten_crop":
            return self.dataset.ten_crop_views(i)
        img_CHW, label = self.dataset[i]
        views = [img_CHW] if self.views == "none" else [img_CHW, img_CHW.flip(-1)]
        return torch.stack(views), label


# Images per encoder call on CPU. Each call's activations then stay under glibc's mmap threshold (32 MB at
# most) and reuse freed blocks, where 256-image calls fault in fresh pages (vq2_fmnist: 32 s of the 214 s of
# CPU time for the 60k images went to the kernel). No fewer: from 32 images up oneDNN picks the convolution
# kernels it picks for larger batches here (for 8 on one thread it picks others, which round differently), so
# the codes are the ones one call on a whole batch gives (checked on all 60k train images:
# `python -m benchmarks tokenize --full`).
CPU_ENCODE_CHUNK = 32


def keep_freed_heap() -> None:
    """glibc: serve blocks up to 32 MB (its largest mmap threshold) from the heap and never trim it, so the
    activations of an encoder call reuse the pages the last call freed. With the defaults they came as fresh
    zeroed pages on every call: ~450 page faults and 0.7 ms of kernel time per vq2_fmnist image on one
    thread, a quarter of its time. Larger blocks are still mmapped and given back, so a tokenize run's
    growing arrays do not fragment the heap, as they did under `argen.runtime.keep_freed_memory` (mmap off:
    18 GB). The process keeps its peak heap until it exits. A no-op off glibc or with ARGEN_SYSTEM_MALLOC=1.
    """
    if os.environ.get(ENV_OPT_OUT) == "1" or platform.system() != "Linux" or not platform.libc_ver()[0]:
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 * 2**20)
    mallopt(m_trim_threshold, 2**31 - 1)


def tokenizer_encoder(
    tokenizer: nn.Module, chunk: int | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The codes `argen tokenize` stores: images (B, C, H, W) in [-1, 1] -> (B, h, w) from a vq tokenizer, or
    (B, L) over all scales from an msvq one.

    On CPU with torch threads T > 1, T worker threads encode a batch's chunks at once, each running the ops of
    its chunk on one thread. Threads splitting every op of a 32-image call instead meet at a barrier per op,
    hundreds per batch, and on a loaded machine each waits for a descheduled thread: 512 images took 8x the
    wall time of two 256-image calls that way, the workers a third of it (2 threads, load 9).

    Args:
        chunk: images per encoder call, a smaller remainder joining the call before it; None:
            CPU_ENCODE_CHUNK on CPU, the whole batch on other devices.
    """
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be >= 1 image, got {chunk}")
    if tokenizer.kind == "msvq":

        def encode(img_BCHW: torch.Tensor) -> torch.Tensor:
            return torch.cat(tokenizer.img_to_idxBl(img_BCHW), dim=1)
    else:
        encode = tokenizer.encode
    pool: list[ThreadPoolExecutor] = []  # made on first use, kept for the next batches

    @torch.inference_mode()
    def encode_on_one_thread(img_BCHW: torch.Tensor) -> torch.Tensor:
        torch.set_num_threads(1)  # this worker's own setting (OpenMP and MKL keep one per thread)
        return encode(img_BCHW)

    @torch.inference_mode()
    def encode_chunks(img_BCHW: torch.Tensor) -> torch.Tensor:
        cpu, threads = img_BCHW.device.type == "cpu", torch.get_num_threads()
        size = chunk or (CPU_ENCODE_CHUNK if cpu else len(img_BCHW))
        starts = list(range(0, max(len(img_BCHW) - size + 1, 1), size))
        parts = [img_BCHW[b:e] for b, e in zip(starts, [*starts[1:], len(img_BCHW)], strict=True)]
        if not cpu or threads == 1 or len(parts) == 1:
            return torch.cat([encode(part) for part in parts])
        if not pool:
            pool.append(ThreadPoolExecutor(threads, thread_name_prefix="argen-encode"))
        try:
            return torch.cat(list(pool[0].map(encode_on_one_thread, parts)))
        finally:
            torch.set_num_threads(threads)  # set_num_threads also sets the default of threads to come

    return encode_chunks


def store_dtype(vocab_size: int) -> str:
    return "int16" if vocab_size <= 32767 else "int32"


@torch.no_grad()
def write_token_store(
    encode_fn: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    out: str | Path,
    vocab_size: int,
    views: str = "none",
    batch_size: int = 64,
    shard_size: int = 1024,
    device: str | torch.device = "cpu",
    metadata: dict[str, Any] | None = None,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = lambda: None,
) -> Path:
    """Tokenize every view of every image into the store folder `out`; call on every rank.

    Args:
        encode_fn: images (B, C, H, W) in [-1, 1] on `device` -> integer codes (B, L) or (B, h, w).
        dataset: items (img_CHW, label); an ImageFolder for views="ten_crop".
        vocab_size: codebook size (sets the dtype; codes outside [0, vocab_size) are an error).
        batch_size: images per encoder batch (each with all its views).
        shard_size: images per shard (the unit of work and of resumption).
        metadata: JSON-able facts stored in meta.json (tokenizer file and fingerprint, data config, ...).
        rank, world_size, barrier: this process's place in the job, and the job's barrier.

    Returns:
        `out`. A complete store with the same plan is left as it is; another plan is refused.
    """
    out = Path(out)
    data = Views(dataset, views)
    plan = {
        "num_items": len(data),
        "views": views,
        "num_views": VIEWS[views],
        "dtype": store_dtype(vocab_size),
        "vocab_size": vocab_size,
        "shard_size": shard_size,
        "batch_size": batch_size,
        **(metadata or {}),
    }
    if not len(data):
        raise ValueError("write_token_store got an empty dataset")
    if (out / "meta.json").is_file():
        _check_plan(out, json.loads((out / "meta.json").read_text())["plan"], plan)
        if rank == 0:
            shutil.rmtree(out / "shards", ignore_errors=True)  # a crash after the merge left them
        return out
    shards = out / "shards"
    if out.exists() and (not out.is_dir() or (not shards.is_dir() and any(out.iterdir()))):
        raise ValueError(f"{out} exists and is not a token store being written; choose another --out")
    if not (shards / "plan.json").is_file():  # every rank may: same content, atomic rename
        atomic_write_text(shards / "plan.json", json.dumps(plan, indent=2, sort_keys=True) + "\n")
    barrier()
    _check_plan(out, json.loads((shards / "plan.json").read_text()), plan)
    _encode_shards(encode_fn, data, shards, plan, device, num_workers, rank, world_size)
    barrier()
    if rank == 0:
        _merge(out, plan)
    barrier()
    return out


def _check_plan(out: Path, have: dict, want: dict) -> None:
    if have != want:
        diff = sorted(k for k in {**have, **want} if have.get(k) != want.get(k))
        raise ValueError(
            f"{out} holds a token store made with other settings ({', '.join(diff)} differ); rerun with the "
            "same arguments to finish it, or choose another --out"
        )


def _encode_shards(
    encode_fn: Callable[[torch.Tensor], torch.Tensor],
    data: Views,
    shards: Path,
    plan: dict,
    device: str | torch.device,
    num_workers: int,
    rank: int,
    world_size: int,
) -> None:
    from tqdm.auto import tqdm

    n, size = plan["num_items"], plan["shard_size"]
    todo = [
        k for k in range(rank, math.ceil(n / size), world_size) if not (shards / f"{k:06d}.npz").is_file()
    ]
    images = sum(min(size, n - k * size) for k in todo)
    bar = tqdm(total=images, disable=rank != 0, desc=f"tokenizing -> {shards.parent}", unit="img")
    for k in todo:
        part = Subset(data, range(k * size, min((k + 1) * size, n)))
        loader = DataLoader(part, batch_size=plan["batch_size"], shuffle=False, num_workers=num_workers)
        codes, labels = [], []
        for views_BACHW, label_B in loader:
            b, a = views_BACHW.shape[:2]
            code = encode_fn(views_BACHW.flatten(0, 1).to(device))
            grid = list(code.shape[1:])
            codes.append(code.reshape(b, a, -1).cpu().numpy())
            labels.append(torch.as_tensor(label_B, dtype=torch.int64).numpy())
            bar.update(b)
        codes_NAL = np.concatenate(codes)
        if codes_NAL.min() < 0 or codes_NAL.max() >= plan["vocab_size"]:
            raise ValueError(
                f"the tokenizer gave codes in [{codes_NAL.min()}, {codes_NAL.max()}], outside its "
                f"vocabulary of {plan['vocab_size']}"
            )

        def write(tmp: Path, codes_NAL=codes_NAL, labels=labels, grid=grid) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, codes=codes_NAL.astype(plan["dtype"]), labels=np.concatenate(labels), grid=grid)

        atomic_write(shards / f"{k:06d}.npz", write)
    bar.close()


def _merge(out: Path, plan: dict) -> None:
    """Shards -> codes.npy and labels.npy (one shard in memory at a time), then meta.json."""
    shards = out / "shards"
    n, size = plan["num_items"], plan["shard_size"]
    files = [shards / f"{k:06d}.npz" for k in range(math.ceil(n / size))]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise ValueError(f"{out}: shards {missing[:5]} are missing after encoding; rerun the same command")
    with np.load(files[0]) as f:
        length, grid = f["codes"].shape[2], f["grid"].tolist()
    labels_N = np.zeros(n, dtype=np.int64)

    def write_codes(tmp: Path) -> None:
        shape = (n, plan["num_views"], length)
        codes = np.lib.format.open_memmap(tmp, mode="w+", dtype=plan["dtype"], shape=shape)
        for k, file in enumerate(files):
            with np.load(file) as f:
                codes[k * size : (k + 1) * size] = f["codes"]
                labels_N[k * size : (k + 1) * size] = f["labels"]
        codes.flush()
        del codes

    atomic_write(out / "codes.npy", write_codes)

    def write_labels(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, labels_N)

    atomic_write(out / "labels.npy", write_labels)
    meta = {"grid": grid, "num_items": n, "shape": [n, plan["num_views"], length], "plan": plan}
    atomic_write_text(out / "meta.json", json.dumps({**plan, **meta}, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(shards)
