"""Datasets: Fashion-MNIST IDX (real files and tiny written ones), ImageFolder, token datasets."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from argen.config import DataConfig
from argen.data import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    FashionMNIST,
    ImageFolder,
    TokenDataset,
    build_dataset,
    build_image_dataset,
    extract_tokens,
    read_idx,
    ten_crops,
)


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}i", *arr.shape)
    raw = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.fixture
def tiny_idx(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    for prefix, gz in (("train", True), ("t10k", False)):  # gz and raw files both accepted
        suffix = ".gz" if gz else ""
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
    return tmp_path, images, labels


@pytest.mark.parametrize("split", ["train", "test"])
def test_tiny_idx_padding_and_scaling(tiny_idx, split):
    root, images, _ = tiny_idx
    ds = build_image_dataset(DataConfig(source="fashion_mnist", root=str(root), split=split))
    assert len(ds) == 5
    img, label = ds[2]
    assert img.shape == (1, 32, 32) and label == 4
    torch.testing.assert_close(img[0, 2:30, 2:30], torch.from_numpy(images[2]).float() / 127.5 - 1)
    border = torch.cat([img[0, :2].flatten(), img[0, 30:].flatten(), img[0, :, :2].flatten()])
    assert (border == -1).all()  # padded with the background (black)


def test_read_idx_roundtrip_and_errors(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", arr, gz=True)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), arr)
    (tmp_path / "bad").write_bytes(b"\x12\x34\x56\x78")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", arr, gz=False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short")


def test_missing_files_name_the_package(tmp_path):
    with pytest.raises(ValueError, match="dataset-fashion-mnist") as err:
        FashionMNIST(tmp_path, "train")
    assert "train-images-idx3-ubyte.gz" in str(err.value)
    with pytest.raises(ValueError, match="split"):
        FashionMNIST(tmp_path, "val")


@pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist():
    ds = FashionMNIST(split="test")
    assert len(ds) == 10_000 and len(FASHION_MNIST_CLASSES) == 10
    img, label = ds[0]
    assert img.shape == (1, 32, 32) and img.min() == -1 and img.max() <= 1 and label == 9  # ankle boot
    counts = torch.bincount(ds.labels_N, minlength=10)
    assert (counts == 1000).all()


def make_folder(root: Path) -> None:
    for c, colour in (("cat", (255, 0, 0)), ("ant", (0, 0, 255))):
        (root / c).mkdir(parents=True)
        for i in range(2):
            arr = np.zeros((20, 30, 3), dtype=np.uint8)
            arr[:, 5:25] = colour  # a centred 20x20 square: the centre crop is one flat colour
            Image.fromarray(arr).save(root / c / f"{i}.png")


def test_imagefolder_centre_crop_and_labels(tmp_path):
    make_folder(tmp_path / "train")
    ds = build_image_dataset(
        DataConfig(source="imagefolder", root=str(tmp_path), split="train", image_size=8)
    )
    assert ds.classes == ["ant", "cat"] and len(ds) == 4
    img, label = ds[0]
    assert img.shape == (3, 8, 8) and label == 0
    torch.testing.assert_close(img[:, 4, 4], torch.tensor([-1.0, -1.0, 1.0]))  # ant = blue
    assert ds[3][1] == 1 and ds[3][0][0].mean() == 1.0  # cat = red
    with pytest.raises(ValueError, match="no folder"):
        build_image_dataset(DataConfig(source="imagefolder", root=str(tmp_path), split="val"))


def test_ten_crop_choices(tmp_path):
    arr = np.arange(36 * 36 * 3, dtype=np.uint8).reshape(36, 36, 3)
    crops = ten_crops(Image.fromarray(arr), 32)
    assert len(crops) == 10 and all(c.size == (32, 32) for c in crops)
    np.testing.assert_array_equal(np.asarray(crops[5]), np.asarray(crops[0])[:, ::-1])
    make_folder(tmp_path)
    ds = ImageFolder(tmp_path, image_size=16, ten_crop=True)
    assert ds[0][0].shape == (3, 16, 16)


def test_token_dataset_roundtrip(tmp_path, tiny_idx):
    root, _, _ = tiny_idx
    images_ds = FashionMNIST(root, "train")

    def encode(img_BCHW):  # a fake tokenizer: 4x4 average pooling quantised to 300 levels
        return ((torch.nn.functional.avg_pool2d(img_BCHW, 8) + 1) * 149.5).round().long()[:, 0]

    path = extract_tokens(
        encode, images_ds, tmp_path / "tok.npz", batch_size=2, metadata={"tokenizer": "fake"}
    )
    ds = build_dataset(DataConfig(source="tokens", root=str(path)))
    assert isinstance(ds, TokenDataset) and len(ds) == 5
    assert ds.metadata["tokenizer"] == "fake" and ds.metadata["grid"] == [4, 4]
    codes, label = ds[4]
    assert codes.dtype == torch.int64 and codes.shape == (16,) and label == 5
    torch.testing.assert_close(codes, encode(images_ds[4][0][None]).flatten())
    with np.load(path) as f:
        assert f["codes"].dtype == np.int16
    with pytest.raises(ValueError, match="not found"):
        TokenDataset(tmp_path / "nope.npz")


def test_bad_source_is_rejected():
    with pytest.raises(ValueError, match="source"):
        DataConfig(source="cifar")
