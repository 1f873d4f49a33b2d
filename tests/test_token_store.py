"""Token store: sharded writing (any rank count, byte-identical, resumable), memory-mapped reading, views."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from argen.config import DataConfig
from argen.data import ImageFolder, TokenDataset, augment_index, build_dataset, extract_tokens, ten_crops
from argen.token_store import Views, write_token_store

STORE_FILES = ("codes.npy", "labels.npy", "meta.json")


def make_images(root: Path, n: int, classes: int = 3, seed: int = 0) -> Path:
    """n random RGB images of mixed sizes (12..15 px) in `classes` class folders."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        h, w = rng.integers(12, 16, 2)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    return root


def fake_encode(img_BCHW: torch.Tensor) -> torch.Tensor:
    """A stand-in tokenizer: 2x2 average pooling of the red channel quantised to 32 levels, (B, h, w)."""
    return ((torch.nn.functional.avg_pool2d(img_BCHW[:, :1], 2) + 1) * 15.99).floor().long()[:, 0]


class Crash(Exception):
    pass


def crashing_encode(after: int):
    calls = {"n": 0}

    def encode(img_BCHW: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] > after:
            raise Crash
        return fake_encode(img_BCHW)

    return encode


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> ImageFolder:
    return ImageFolder(make_images(tmp_path_factory.mktemp("imgs"), 150), image_size=8)


def write(ds, out, encode=fake_encode, views="ten_crop", **kw) -> Path:
    args = dict(vocab_size=32, views=views, batch_size=8, shard_size=16, metadata={"tokenizer": "fake"})
    return write_token_store(encode, ds, out, **{**args, **kw})


def store_bytes(path: Path) -> dict[str, bytes]:
    return {name: (path / name).read_bytes() for name in STORE_FILES}


def test_ranks_and_crash_resume_give_the_same_bytes(folder, tmp_path):
    one = write(folder, tmp_path / "one")
    assert sorted(p.name for p in one.iterdir()) == sorted(STORE_FILES)  # shards merged and removed
    # two ranks one after the other (rank 1 first, as if rank 0 were slow): rank 0 merges
    write(folder, tmp_path / "two", rank=1, world_size=2)
    assert not (tmp_path / "two" / "meta.json").exists()
    write(folder, tmp_path / "two", rank=0, world_size=2)
    # a crash after 5 of the 10 shards (2 batches each), then a rerun that must only do the rest
    with pytest.raises(Crash):
        write(folder, tmp_path / "crash", encode=crashing_encode(10))
    done = sorted(p.name for p in (tmp_path / "crash" / "shards").glob("*.npz"))
    assert done == [f"{k:06d}.npz" for k in range(5)]
    write(folder, tmp_path / "crash", encode=crashing_encode(10))  # 5 shards left = 10 batches: no crash
    assert store_bytes(tmp_path / "two") == store_bytes(one) == store_bytes(tmp_path / "crash")
    meta = json.loads((one / "meta.json").read_text())
    assert meta["shape"] == [150, 10, 16] and meta["grid"] == [4, 4] and meta["dtype"] == "int16"
    assert write(folder, one) == one  # complete: left as it is
    with pytest.raises(ValueError, match="batch_size"):
        write(folder, one, batch_size=4)
    with pytest.raises(ValueError, match="not a token store"):
        write(folder, tmp_path / "one" / "codes.npy")


def test_store_holds_every_view_and_training_draws_one_per_epoch(folder, tmp_path):
    path = write(folder, tmp_path / "s")
    ds = build_dataset(DataConfig(source="tokens", root=str(path)), seed=3)
    assert isinstance(ds, TokenDataset) and len(ds) == 150 and ds.shape_NAL == (150, 10, 16)
    assert ds.metadata["tokenizer"] == "fake" and ds.metadata["views"] == "ten_crop"
    i = 37
    img, label = folder._open(i)
    crops = torch.stack([torch.from_numpy(np.array(c)).permute(2, 0, 1) for c in ten_crops(img, 8)])
    expected = fake_encode(crops.float() / 127.5 - 1).flatten(1)
    for epoch in range(4):
        ds.set_epoch(epoch)
        codes, got_label = ds[i]
        assert codes.dtype == torch.int64 and got_label == label == 0
        torch.testing.assert_close(codes, expected[augment_index(3, epoch, i, 10)], rtol=0, atol=0)
    drawn = [augment_index(3, e, i, 10) for e in range(50) for i in range(20)]
    assert np.bincount(drawn, minlength=10).min() > 60  # every view is used, about equally
    assert [augment_index(3, 1, 5, 10)] * 2 == [augment_index(3, 1, 5, 10) for _ in range(2)]


def test_flip_views_dtype_and_npz_still_loads(tmp_path, folder):
    path = write(folder, tmp_path / "flip", views="flip", vocab_size=40000)
    ds = TokenDataset(path)
    assert ds.shape_NAL == (150, 2, 16) and np.load(path / "codes.npy", mmap_mode="r").dtype == np.int32
    views, _ = Views(folder, "flip")[4]
    torch.testing.assert_close(views[1], views[0].flip(-1))
    with pytest.raises(ValueError, match="imagefolder"):
        Views(torch.utils.data.TensorDataset(torch.zeros(2, 1, 4, 4)), "ten_crop")
    old = extract_tokens(fake_encode, folder, tmp_path / "old.npz", batch_size=64)
    legacy = TokenDataset(old)
    assert legacy.shape_NAL == (150, 1, 16)
    torch.testing.assert_close(legacy[9][0], legacy.codes_NL[9])
    torch.testing.assert_close(
        legacy.codes_NL, TokenDataset(write(folder, tmp_path / "n", views="none")).codes_NL
    )


def test_incomplete_store_is_refused(folder, tmp_path):
    with pytest.raises(Crash):
        write(folder, tmp_path / "part", encode=crashing_encode(2))
    with pytest.raises(ValueError, match="rerun the same"):
        TokenDataset(tmp_path / "part")


RSS_PROBE = """
import sys, numpy as np
from argen.data import TokenDataset

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

ds = TokenDataset(sys.argv[1])
ds.set_epoch(1)
total = int(ds[0][0][0])  # the first read loads the read path (a fixed few MB, whatever the store size)
before = status("VmHWM")
for i in np.random.default_rng(0).permutation(len(ds)):
    total += int(ds[int(i)][0][0])
print(status("VmHWM") - before, total)
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_reading_the_whole_store_keeps_rss_small(tmp_path):
    n, a, length = 16_000, 10, 256  # 82 MB of int16 codes
    store = tmp_path / "big"
    store.mkdir()
    codes = np.lib.format.open_memmap(store / "codes.npy", "w+", np.int16, (n, a, length))
    codes[:] = np.arange(n * a * length, dtype=np.int64).reshape(n, a, length) % 509
    codes.flush()
    np.save(store / "labels.npy", np.arange(n) % 10)
    (store / "meta.json").write_text(json.dumps({"grid": [16, 16], "num_items": n}))
    probe = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, str(store)], capture_output=True, text=True, check=True
    )
    growth, _ = map(int, probe.stdout.split())
    size = (store / "codes.npy").stat().st_size
    assert growth < 0.1 * size, (
        f"peak RSS grew by {growth / 2**20:.1f} MiB reading a {size / 2**20:.0f} MiB store"
    )


def test_training_refuses_a_store_of_a_larger_codebook(folder, tmp_path):
    from argen.config import TrainConfig
    from argen.training.tasks import get_task

    path = write(folder, tmp_path / "big_vocab", vocab_size=100)  # the gpt debug preset has 64 entries
    cfg = TrainConfig(task="gpt", model={"preset": "debug"}, data=DataConfig(source="tokens", root=str(path)))
    with pytest.raises(ValueError, match=r"model\.vocab_size=100"):
        get_task("gpt").build_dataset(cfg)
    cfg = TrainConfig(task="gpt", model={"preset": "debug", "vocab_size": 100}, data=cfg.data)
    assert len(get_task("gpt").build_dataset(cfg)) == 150
