"""Distributed sample writing by global index (resumable), gap/duplicate checks, and ADM `.npz` packing.

Sample i always gets label `labels[i]` and is made by `sample_fn(labels, indices)` with its global index i,
whichever rank or batch makes it, so a folder filled by 8 GPUs equals one filled by 1 (argen's samplers draw
sample i from a random stream keyed by (seed, i)). Files: `{i:06d}.png` (label in a PNG text chunk), or
`.npz` shards `shard_{first:06d}_{last:06d}.npz` holding indices, images and labels, and `run.json`: the
settings of the run that wrote them, so a folder is never silently filled by two different runs.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from argen.io import atomic_write
from argen.sampling.images import to_uint8

# labels (B,) int64, global sample indices (B,) int64 -> images (B, C, H, W) float in [0, 1]
SampleFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_PNG = re.compile(r"(\d{6,})\.png")
_SHARD = re.compile(r"shard_(\d{6,})_(\d{6,})\.npz")


@dataclass
class SampleCheck:
    """What a sample folder holds against the expected indices 0..num_samples-1."""

    num_samples: int
    found: int
    missing: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    written: int = 0  # by this rank in this call

    @property
    def ok(self) -> bool:
        return not self.missing and not self.duplicates


def _labels_for(labels: Sequence[int] | torch.Tensor | int | None, n: int) -> torch.Tensor:
    """Per-index labels: a sequence of n, an int K (balanced classes i % K), or None (all 0)."""
    if labels is None:
        return torch.zeros(n, dtype=torch.int64)
    if isinstance(labels, int):
        return torch.arange(n, dtype=torch.int64) % labels
    out = torch.as_tensor(labels, dtype=torch.int64).flatten()
    if len(out) != n:
        raise ValueError(f"got {len(out)} labels for {n} samples; pass one per sample or the class count")
    return out


def indices_on_disk(folder: str | Path) -> list[int]:
    """Global indices present (PNG names and shard contents); repeated entries mean duplicates."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out: list[int] = []
    for p in folder.iterdir():
        if m := _PNG.fullmatch(p.name):
            out.append(int(m.group(1)))
        elif _SHARD.fullmatch(p.name):
            with np.load(p, allow_pickle=False) as f:
                out.extend(int(i) for i in f["indices"])
    return out


def check_samples(folder: str | Path, num_samples: int) -> SampleCheck:
    """Report missing indices (gaps) and indices present more than once."""
    counts = Counter(indices_on_disk(folder))
    return SampleCheck(
        num_samples=num_samples,
        found=sum(1 for i in counts if 0 <= i < num_samples),
        missing=[i for i in range(num_samples) if i not in counts],
        duplicates=sorted(i for i, c in counts.items() if c > 1),
    )


def save_adm_npz(images_BCHW: torch.Tensor, labels_B: torch.Tensor | None, path: str | Path) -> Path:
    """In-memory samples in [0, 1] -> ADM `.npz` (`arr_0` uint8 NHWC, grey replicated to RGB; `arr_1` labels),
    the same layout `pack_npz` writes."""
    arr_NHWC = to_uint8(images_BCHW)
    if arr_NHWC.shape[-1] == 1:
        arr_NHWC = np.repeat(arr_NHWC, 3, axis=-1)
    extra = {"arr_1": labels_B.cpu().numpy().astype(np.int64)} if labels_B is not None else {}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic(path, lambda p: _savez(p, arr_0=arr_NHWC, **extra))
    return path


def _savez(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    atomic_write(path, write)


def _write_batch(
    folder: Path, idx_B: torch.Tensor, img_BHWC: np.ndarray, labels_B: torch.Tensor, fmt: str
) -> None:
    from PIL import Image

    if fmt == "npz":
        idx = idx_B.tolist()
        name = f"shard_{idx[0]:06d}_{idx[-1]:06d}.npz"
        _atomic(
            folder / name,
            lambda p: _savez(p, indices=idx_B.numpy(), images=img_BHWC, labels=labels_B.numpy()),
        )
        return
    from PIL.PngImagePlugin import PngInfo

    for i, arr, label in zip(idx_B.tolist(), img_BHWC, labels_B.tolist(), strict=True):
        im = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
        info = PngInfo()
        info.add_text("label", str(label))  # so pack_npz can emit ADM's arr_1 for PNG folders too
        _atomic(folder / f"{i:06d}.png", lambda p, im=im, info=info: im.save(p, format="PNG", pnginfo=info))


RUN_FILE = "run.json"


def claim_folder(folder: str | Path, run: dict, overwrite: bool = False) -> None:
    """Record `run` (the settings that determine the samples) in `folder`, or refuse a folder that holds
    another run's samples. `overwrite` deletes that run's samples (and only those files) first."""
    folder, run = Path(folder), json.loads(json.dumps(run))  # compare as JSON (tuples become lists)
    path = folder / RUN_FILE
    theirs = json.loads(path.read_text()) if path.is_file() else None
    present = bool(indices_on_disk(folder))
    if present and theirs != run and not overwrite:
        if theirs is None:
            why = "holds samples without a run.json (written by an unknown run)"
        else:
            keys = sorted(k for k in set(run) | set(theirs) if run.get(k) != theirs.get(k))
            why = "holds samples of another run (differs in " + ", ".join(
                f"{k}: {theirs.get(k)!r} there vs {run.get(k)!r} now" for k in keys
            )
            why += ")"
        raise ValueError(f"{folder} {why}; use another --out, or --overwrite to delete them and start clean")
    if overwrite and theirs != run and folder.is_dir():
        for p in folder.iterdir():
            if _PNG.fullmatch(p.name) or _SHARD.fullmatch(p.name):
                p.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    _atomic(path, lambda p: p.write_text(json.dumps(run, indent=2, sort_keys=True) + "\n"))


def write_samples(
    sample_fn: SampleFn,
    folder: str | Path,
    num_samples: int,
    labels: Sequence[int] | torch.Tensor | int | None = None,
    batch_size: int = 64,
    fmt: str = "png",
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
) -> SampleCheck:
    """Generate samples 0..num_samples-1 into `folder`, this rank taking every world_size-th missing index.

    Args:
        sample_fn: (labels (B,), global indices (B,)) -> images (B, C, H, W) in [0, 1]; image i must depend
            only on its label and index (and the run's settings) for resumed and multi-rank folders to agree.
        labels: one per sample, or the number of classes (balanced: label i % K), or None.
        fmt: "png" (one file per sample) or "npz" (one shard per batch).
        rank, world_size: default to the torch.distributed process group (or 0 / 1).

    Returns:
        The folder check after all ranks finished (missing / duplicate indices), with this rank's count.
        Indices already on disk are skipped, so a killed job resumes by calling this again.
    """
    from tqdm.auto import tqdm

    from argen.distributed import barrier, get_rank, get_world_size

    if fmt not in ("png", "npz"):
        raise ValueError(f"fmt must be 'png' or 'npz', got {fmt!r}")
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    all_labels = _labels_for(labels, num_samples)
    done = set(indices_on_disk(folder))
    barrier()  # every rank must see the same `done` before anyone writes
    todo = torch.tensor([i for i in range(num_samples) if i not in done], dtype=torch.int64)
    mine = todo[rank::world_size]
    written = 0
    for start in tqdm(range(0, len(mine), batch_size), disable=not progress or rank != 0, desc="sampling"):
        idx_B = mine[start : start + batch_size]
        with torch.no_grad():
            img_BCHW = sample_fn(all_labels[idx_B], idx_B)
        if img_BCHW.shape[0] != len(idx_B):
            raise ValueError(f"sample_fn returned {img_BCHW.shape[0]} images for {len(idx_B)} labels")
        _write_batch(folder, idx_B, to_uint8(img_BCHW), all_labels[idx_B], fmt)
        written += len(idx_B)
    barrier()
    report = check_samples(folder, num_samples)
    report.written = written
    return report


def pack_npz(
    folder: str | Path, out_path: str | Path | None = None, num_samples: int | None = None, rgb: bool = True
) -> Path:
    """Pack a sample folder into an ADM-format `.npz`: `arr_0` uint8 (N, H, W, C), plus `arr_1` labels
    when the shards carry them. Grey images become 3 channels when `rgb` (what FID tools expect).

    Raises ValueError when indices are missing or duplicated.
    """
    from PIL import Image

    folder = Path(folder)
    num = num_samples if num_samples is not None else len(set(indices_on_disk(folder)))
    report = check_samples(folder, num)
    if not report.ok or num == 0:
        raise ValueError(
            f"{folder}: cannot pack {num} samples: missing {report.missing[:8]}, duplicates "
            f"{report.duplicates[:8]}; finish sampling first"
        )
    images: list[np.ndarray | None] = [None] * num
    labels: list[int | None] = [None] * num
    for p in sorted(folder.iterdir()):
        if (m := _PNG.fullmatch(p.name)) and int(m.group(1)) < num:
            with Image.open(p) as im:
                arr, label = np.asarray(im), im.text.get("label")
            images[int(m.group(1))] = arr[..., None] if arr.ndim == 2 else arr
            labels[int(m.group(1))] = int(label) if label is not None else None
        elif _SHARD.fullmatch(p.name):
            with np.load(p, allow_pickle=False) as f:
                for i, img, lab in zip(f["indices"], f["images"], f["labels"], strict=True):
                    if i < num:
                        images[int(i)], labels[int(i)] = img, int(lab)
    arr_NHWC = np.stack(images)
    if rgb and arr_NHWC.shape[-1] == 1:
        arr_NHWC = np.repeat(arr_NHWC, 3, axis=-1)
    out = Path(out_path) if out_path is not None else folder.with_suffix(".npz")
    extra = {"arr_1": np.array(labels, dtype=np.int64)} if all(v is not None for v in labels) else {}
    out.parent.mkdir(parents=True, exist_ok=True)
    _atomic(out, lambda p: _savez(p, arr_0=arr_NHWC, **extra))
    return out
