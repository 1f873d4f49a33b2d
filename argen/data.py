"""Datasets: Fashion-MNIST (IDX files), ImageFolder trees, and pre-extracted token datasets.

Image datasets yield `(img_CHW float in [-1, 1], label int)`; token datasets `(codes_L int64, label int)`.
Augmentations (ten crops, stored token views) are drawn by `augment_index(seed, epoch, index)`: no RNG state,
so a resumed run and any number of loader workers see what an uninterrupted run would. The trainer calls
`set_epoch` on datasets that have it.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from argen.config import DataConfig

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FMNIST_PREFIX = {"train": "train", "test": "t10k"}
_IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm"}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# ------------------------------------------------------------------------------------------- Fashion-MNIST
def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw, detected from its first bytes) into a numpy array."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: header says {dims}, found {data.size} values")
    return data.reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise ValueError(
        f"Fashion-MNIST file {stem}[.gz] not found in {root}. Install the Debian package "
        f"`dataset-fashion-mnist` (apt-get install dataset-fashion-mnist, files under {FASHION_MNIST_DIR}) "
        "or point data.root at a directory holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (raw or gzipped)."
    )


@functools.lru_cache(maxsize=4)
def _load_fmnist(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = _FMNIST_PREFIX[split]
    images = read_idx(_find_idx(Path(root), f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find_idx(Path(root), f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"Fashion-MNIST files in {root} disagree: images {images.shape}, labels {labels.shape}"
        )
    return images, labels.astype(np.int64)


class FashionMNIST(Dataset):
    """Fashion-MNIST as 1 x image_size x image_size in [-1, 1], padded with the background value (black).

    Args:
        root: directory with the four IDX files (default: the Debian package's location).
        split: "train" (60k) or "test" (10k).
        image_size: >= 28; the 28x28 image is centred on a black canvas (32 gives the 16x16 token grid).
    """

    def __init__(self, root: str | Path | None = None, split: str = "train", image_size: int = 32):
        if split not in _FMNIST_PREFIX:
            raise ValueError(f"Fashion-MNIST split must be one of {sorted(_FMNIST_PREFIX)}, got {split!r}")
        root = Path(root) if root is not None else FASHION_MNIST_DIR
        if not root.is_dir():
            _find_idx(root, f"{_FMNIST_PREFIX[split]}-images-idx3-ubyte")  # raises the install hint
        images, labels = _load_fmnist(str(root), split)
        h, w = images.shape[1:]
        if image_size < max(h, w):
            raise ValueError(f"image_size {image_size} is smaller than the {h}x{w} Fashion-MNIST images")
        top, left = (image_size - h) // 2, (image_size - w) // 2
        canvas = np.zeros((len(images), image_size, image_size), dtype=np.uint8)  # 0 = background
        canvas[:, top : top + h, left : left + w] = images
        self.images_NHW = torch.from_numpy(canvas)
        self.labels_N = torch.from_numpy(labels)
        self.classes = FASHION_MNIST_CLASSES

    def __len__(self) -> int:
        return len(self.labels_N)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.images_NHW[i].float().div(127.5).sub(1.0)
        return img.unsqueeze(0), int(self.labels_N[i])


# --------------------------------------------------------------------------------------------- ImageFolder
def center_crop_resize(img: Any, size: int) -> Any:
    """Largest centred square of a PIL image, resized to size x size (bicubic)."""
    from PIL import Image

    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.crop((left, top, left + s, top + s)).resize((size, size), Image.BICUBIC)


def ten_crop(img: Any, size: int, k: int, ratio: float = 1.125) -> Any:
    """Crop k of ten (k < 5: corners TL, TR, BL, BR, centre; k >= 5: the mirror of crop k - 5), size x size,
    after resizing the short side to round(size * ratio) so the crops differ by a few pixels of translation.
    """
    from PIL import Image

    w, h = img.size
    short = round(size * ratio)
    img = img.resize((max(short, round(w * short / h)), max(short, round(h * short / w))), Image.BICUBIC)
    w, h = img.size
    boxes = [(0, 0), (w - size, 0), (0, h - size), (w - size, h - size), ((w - size) // 2, (h - size) // 2)]
    x, y = boxes[k % 5]
    crop = img.crop((x, y, x + size, y + size))
    return crop.transpose(Image.FLIP_LEFT_RIGHT) if k >= 5 else crop


def ten_crops(img: Any, size: int, ratio: float = 1.125) -> list[Any]:
    """All ten crops of `ten_crop`, in order."""
    return [ten_crop(img, size, k, ratio) for k in range(10)]


_MASK64 = 2**64 - 1


def augment_index(seed: int, epoch: int, index: int, num: int) -> int:
    """Which of `num` augmentations item `index` uses in `epoch`: splitmix64 of (seed, epoch, index)."""
    x = 0
    for v in (seed, epoch, index):
        x = ((x ^ (v & _MASK64)) + 0x9E3779B97F4A7C15) & _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        x ^= x >> 31
    return x % num


class ImageFolder(Dataset):
    """Images in `root/<class>/<file>` (class names sorted -> label ids), RGB in [-1, 1], (3, size, size).

    Args:
        root: the class-folder tree.
        image_size: output side.
        ten_crop: augmentation: item i of epoch e is crop `augment_index(seed, e, i, 10)` of `ten_crop`;
            otherwise a deterministic centre crop.
        seed: the augmentation seed (the trainer passes its own).
    """

    def __init__(self, root: str | Path, image_size: int = 256, ten_crop: bool = False, seed: int = 0):
        root = Path(root)
        if not root.is_dir():
            raise ValueError(
                f"ImageFolder root {root} is not a directory (expected one sub-folder per class)"
            )
        self.classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        self.samples = [
            (f, label)
            for label, c in enumerate(self.classes)
            for f in sorted((root / c).rglob("*"))
            if f.suffix.lower() in _IMAGE_EXTS and f.is_file()
        ]
        if not self.samples:
            raise ValueError(f"no images ({', '.join(sorted(_IMAGE_EXTS))}) found under {root}/<class>/")
        self.image_size = image_size
        self.ten_crop = ten_crop
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _open(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                return im.convert("RGB"), label
        except (OSError, SyntaxError) as e:  # PIL: UnidentifiedImageError, truncated files, bad chunks
            raise ValueError(f"{path} is not a readable image ({e}); remove or replace it, then rerun") from e

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img, label = self._open(i)
        if self.ten_crop:
            img = ten_crop(img, self.image_size, augment_index(self.seed, self.epoch, i, 10))
        else:
            img = center_crop_resize(img, self.image_size)
        return _to_tensor(img), label

    def ten_crop_views(self, i: int) -> tuple[torch.Tensor, int]:
        """All ten crops of image i, (10, 3, size, size) in [-1, 1], and its label."""
        img, label = self._open(i)
        return torch.stack([_to_tensor(c) for c in ten_crops(img, self.image_size)]), label


def _to_tensor(img: Any) -> torch.Tensor:
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
    return arr.permute(2, 0, 1).float().div(127.5).sub(1.0)


# ------------------------------------------------------------------------------------------ token datasets
@torch.no_grad()
def extract_tokens(
    encode_fn: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    path: str | Path,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    metadata: dict[str, Any] | None = None,
    num_workers: int = 0,
) -> Path:
    """Tokenize an image dataset once and write an `.npz` token dataset.

    Args:
        encode_fn: images (B, C, H, W) in [-1, 1] on `device` -> integer codes (B, L) or (B, h, w).
        dataset: items (img_CHW, label).
        path: output `.npz` (written atomically).
        metadata: JSON-able facts stored with the codes (tokenizer file, grid, codebook size, ...).

    Returns:
        The written path. File keys: codes (N, L) int16/int32, labels (N,) int64, metadata (JSON string).
    """
    from tqdm.auto import tqdm

    path = Path(path).with_suffix(".npz")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    codes, labels = [], []
    for img_BCHW, label_B in tqdm(loader, desc=f"tokenizing -> {path.name}", unit="batch"):
        code = encode_fn(img_BCHW.to(device))
        codes.append(code.reshape(code.shape[0], -1).to("cpu", torch.int64).numpy())
        labels.append(torch.as_tensor(label_B).to(torch.int64).numpy())
    if not codes:
        raise ValueError("extract_tokens got an empty dataset")
    codes_NL = np.concatenate(codes)
    grid = tuple(code.shape[1:])
    meta = {"grid": list(grid), "num_items": len(codes_NL), **(metadata or {})}
    dtype = np.int16 if codes_NL.size and codes_NL.min() >= 0 and codes_NL.max() < 2**15 else np.int32
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(
            f,
            codes=codes_NL.astype(dtype),
            labels=np.concatenate(labels),
            metadata=np.array(json.dumps(meta)),
        )
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


class TokenDataset(Dataset):
    """Tokens written by `argen tokenize`: a token store folder (`argen.token_store`, read row by row, never
    loaded) or an `.npz` file (loaded). Needs no tokenizer. Items: (codes_L int64, label int).

    A store holds A views (augmentations) of every image: item i of epoch e is view
    `augment_index(seed, e, i, A)`. Rows are read with positioned reads (os.pread) rather than through a
    memory map, because every page a map touches (in folios of up to 2 MB on recent Linux kernels) counts
    as the reader's resident memory until unmapped; the OS page cache still holds the hot part of the file.
    `codes_NAL` gives the memory-mapped array for analysis.
    """

    def __init__(self, path: str | Path, seed: int = 0):
        path = Path(path)
        self.path, self.seed, self.epoch = path, seed, 0
        self._file: Any = None
        if path.is_dir():
            self._open_store(path)
        elif path.is_file():
            self._open_npz(path)
        else:
            raise ValueError(
                f"token dataset {path} not found; create it with `argen tokenize` (a store folder or .npz)"
            )

    def _open_npz(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as f:
                codes = f["codes"]
                self.labels_N = torch.from_numpy(f["labels"].astype(np.int64))
                self.metadata: dict[str, Any] = json.loads(str(f["metadata"])) if "metadata" in f else {}
        except (KeyError, OSError, ValueError) as e:
            raise ValueError(
                f"{path} is not a token dataset with codes/labels arrays ({e}); re-extract it"
            ) from e
        if codes.ndim != 2 or len(codes) != len(self.labels_N):
            raise ValueError(
                f"{path}: codes {codes.shape} and labels {tuple(self.labels_N.shape)} do not match; "
                "re-extract it"
            )
        self._in_memory: np.ndarray | None = codes[:, None, :]
        self.shape_NAL: tuple[int, ...] = self._in_memory.shape

    def _open_store(self, path: Path) -> None:
        if not (path / "meta.json").is_file():
            raise ValueError(
                f"{path} is not a complete token store (no meta.json): rerun the same `argen tokenize` "
                "command to finish it"
            )
        self.metadata = json.loads((path / "meta.json").read_text())
        self.labels_N = torch.from_numpy(np.load(path / "labels.npy").astype(np.int64))
        self._in_memory = None
        with open(path / "codes.npy", "rb") as f:
            version = np.lib.format.read_magic(f)
            shape, fortran, self._dtype = getattr(np.lib.format, f"read_array_header_{version[0]}_0")(f)
            self._offset = f.tell()
        self.shape_NAL = shape
        if fortran or len(shape) != 3 or shape[0] != len(self.labels_N):
            raise ValueError(f"{path}: codes {shape} and labels do not match a token store; re-tokenize")

    @property
    def codes_NAL(self) -> np.ndarray:
        """All codes (N, A, L): memory-mapped for a store (read-only), the loaded array for `.npz`."""
        if self._in_memory is not None:
            return self._in_memory
        return np.load(self.path / "codes.npy", mmap_mode="r")

    @functools.cached_property
    def codes_NL(self) -> torch.Tensor:
        """View 0 of every item as one int64 tensor (N, L), in memory: for small token sets only."""
        return torch.from_numpy(np.ascontiguousarray(self.codes_NAL[:, 0]).astype(np.int64))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None}  # each DataLoader worker opens its own file

    def _row(self, i: int, a: int) -> np.ndarray:
        if self._in_memory is not None:
            return self._in_memory[i, a]
        if self._file is None:
            self._file = open(self.path / "codes.npy", "rb", buffering=0)  # noqa: SIM115 (kept open)
        _, num_views, length = self.shape_NAL
        size = length * self._dtype.itemsize
        raw = os.pread(self._file.fileno(), size, self._offset + (i * num_views + a) * size)
        return np.frombuffer(raw, self._dtype)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels_N)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        num_views = self.shape_NAL[1]
        a = augment_index(self.seed, self.epoch, i, num_views) if num_views > 1 else 0
        return torch.from_numpy(self._row(i, a).astype(np.int64)), int(self.labels_N[i])


# ---------------------------------------------------------------------------------------------- dispatch
def build_image_dataset(cfg: DataConfig, seed: int = 0) -> Dataset:
    """Image dataset for `cfg.source` fashion_mnist | imagefolder; items (img_CHW in [-1, 1], label).

    seed: the augmentation seed (ImageFolder ten crops); the trainer passes its own.
    """
    if cfg.source == "fashion_mnist":
        return FashionMNIST(cfg.root, cfg.split, cfg.image_size)
    if cfg.source == "imagefolder":
        if cfg.root is None:
            raise ValueError("data.root must name the ImageFolder directory (root/<class>/<image>)")
        root = Path(cfg.root)
        if (root / cfg.split).is_dir():
            root = root / cfg.split  # ImageNet layout: root/train/<class>, root/val/<class>
        elif cfg.split != "train":
            raise ValueError(
                f"split {cfg.split!r}: no folder {root / cfg.split}; the root itself is the train split"
            )
        return ImageFolder(root, cfg.image_size, cfg.ten_crop, seed)
    raise ValueError(f"data.source {cfg.source!r} is not an image source; use fashion_mnist or imagefolder")


def build_dataset(cfg: DataConfig, seed: int = 0) -> Dataset:
    """Any dataset by `cfg.source`: fashion_mnist | imagefolder (images) | tokens (root = the token store
    folder or .npz written by `argen tokenize`). seed: the augmentation seed."""
    if cfg.source == "tokens":
        if cfg.root is None:
            raise ValueError("data.root must name the token store (or .npz) written by `argen tokenize`")
        return TokenDataset(cfg.root, seed)
    if cfg.source in ("fashion_mnist", "imagefolder"):
        return build_image_dataset(cfg, seed)
    raise ValueError(f"unknown data.source {cfg.source!r}; choose fashion_mnist, imagefolder or tokens")
