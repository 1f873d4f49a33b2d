"""Multi-process (gloo, CPU) DDP and FSDP2 training, and distributed sample writing.

The multi-process part runs this file under torchrun once (module fixture) and checks what it wrote.
Run directly: `python -m torch.distributed.run --standalone --nproc_per_node 2 tests/test_distributed.py OUT`.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import TensorDataset
from toy_model import ToyConfig, ToyNet
from two_ranks import torchrun

from argen.config import OptimConfig, TrainConfig
from argen.models.checkpoints import load_model
from argen.sampling.writer import check_samples, pack_npz, write_samples
from argen.training.tasks import Task, register_task

# ------------------------------------------------------------------------------------------- toy task
CALLS = {"n": 0}


def toy_loss(model, batch, opts):
    x_BD, y_B, t_B = batch
    CALLS["n"] += 1
    if CALLS["n"] == opts.get("crash_at_call"):
        raise KeyboardInterrupt("simulated kill")
    loss = (model(x_BD, y_B) - t_B).pow(2).mean()
    return loss, {"mse": float(loss.detach())}


def toy_data(n: int = 64) -> TensorDataset:
    g = torch.Generator().manual_seed(7)
    x_ND = torch.randn(n, 8, generator=g)
    y_N = torch.randint(0, 4, (n,), generator=g)
    return TensorDataset(x_ND, y_N, x_ND.sin().sum(-1) + 0.5 * y_N)


register_task(
    Task(
        "test_dist_toy",
        lambda d: ToyNet(ToyConfig(**{"dropout": 0.0, **{k: v for k, v in d.items() if k != "preset"}})),
        lambda cfg: toy_data(),
        toy_loss,
    )
)


def toy_cfg(out: Path, strategy: str, **kw) -> TrainConfig:
    base = dict(
        task="test_dist_toy",
        strategy=strategy,
        steps=8,
        batch_size=16,
        grad_accum=2,
        ema_decay=0.8,
        out_dir=str(out),
        ckpt_every=3,
        log_every=1,
        seed=5,
        optim=OptimConfig(lr=1e-2, warmup_steps=2, weight_decay=0.05),
    )
    base.update(kw)
    return TrainConfig(**base)


def sample_fn(labels_B: torch.Tensor, idx_B: torch.Tensor) -> torch.Tensor:
    """A deterministic fake sampler: each image encodes its index and label, so placement can be checked."""
    img_BCHW = torch.zeros(len(labels_B), 3, 4, 4)
    img_BCHW[:, 0] = (idx_B % 251).float().div(250)[:, None, None]
    img_BCHW[:, 1] = labels_B.float().div(9)[:, None, None]
    return img_BCHW


# ------------------------------------------------------------------------------------ torchrun worker
def _ddp_grad_diff() -> float:
    """Max |DDP grad - single-process grad| for one global batch split over the ranks."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = ToyNet(ToyConfig(dropout=0.0))
    ref = copy.deepcopy(model)
    x_BD, y_B, t_B = toy_data(8).tensors
    part = slice(rank * 8 // world, (rank + 1) * 8 // world)
    ddp = DistributedDataParallel(model)
    (ddp(x_BD[part], y_B[part]) - t_B[part]).pow(2).mean().backward()
    (ref(x_BD, y_B) - t_B).pow(2).mean().backward()
    return max(
        (p.grad - q.grad).abs().max().item()
        for p, q in zip(model.parameters(), ref.parameters(), strict=True)
    )


def worker(out: Path) -> None:
    from torch.distributed.tensor import DTensor

    from argen.distributed import cleanup, init_distributed
    from argen.training.loop import train

    CALLS["n"] = 0
    train(toy_cfg(out / "ddp", "ddp"))  # creates the process group; the later calls reuse it
    info = init_distributed("cpu")
    result = {"world": info.world_size, "grad_diff": _ddp_grad_diff()}
    CALLS["n"] = 0
    train(toy_cfg(out / "fsdp", "fsdp"))
    CALLS["n"] = 0
    try:
        train(toy_cfg(out / "fsdp_resumed", "fsdp", objective={"crash_at_call": 2 * 4 + 1}))  # dies in step 5
    except KeyboardInterrupt:
        result["crashed"] = True
    CALLS["n"] = 0
    train(toy_cfg(out / "fsdp_resumed", "fsdp"))
    from argen.distributed import wrap_model

    sharded = wrap_model(ToyNet(ToyConfig(dropout=0.0)), "fsdp")
    w = sharded.blocks[0][1].weight
    result["fsdp_dtensor"] = isinstance(w, DTensor) and w.to_local().numel() < w.numel()
    for fmt in ("png", "npz"):
        result[f"written_{fmt}"] = write_samples(
            sample_fn, out / f"samples_{fmt}", 21, labels=10, batch_size=4, fmt=fmt, progress=False
        ).written
    if info.is_main:
        (out / "result.json").write_text(json.dumps(result))
    cleanup()


# ---------------------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def dist_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    torchrun(__file__, str(out), timeout=240)
    return out


@pytest.fixture(scope="module")
def single_process_reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    from argen.training.loop import train

    CALLS["n"] = 0
    return load_file(str(train(toy_cfg(tmp_path_factory.mktemp("single"), "none"))))


@pytest.mark.dist
def test_ddp_gradients_equal_single_process(dist_run):
    result = json.loads((dist_run / "result.json").read_text())
    assert result["world"] == 2
    assert result["grad_diff"] < 1e-6


@pytest.mark.dist
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_process_training_matches_one_process(dist_run, single_process_reference, strategy):
    # DistributedSampler gives rank r the items r::2 of the epoch order, so the global batch equals the
    # single-process batch; averaged gradients then agree up to float reduction order.
    ref = single_process_reference
    got = load_file(str(dist_run / strategy / "model.safetensors"))
    assert ref.keys() == got.keys()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-4, atol=1e-5)
    assert len((dist_run / strategy / "metrics.jsonl").read_text().splitlines()) == 8
    x_ND, y_N, t_N = toy_data().tensors
    torch.manual_seed(5)  # the trainer's initial weights (cfg.seed)
    initial, trained = ToyNet(ToyConfig(dropout=0.0)), load_model(dist_run / strategy / "model.safetensors")
    with torch.no_grad():
        before, after = ((m(x_ND, y_N) - t_N).pow(2).mean().item() for m in (initial, trained))
    assert after < 0.9 * before, (before, after)  # it trained


@pytest.mark.dist
def test_fsdp_shards_and_resumes_bit_identically(dist_run):
    result = json.loads((dist_run / "result.json").read_text())
    assert result["fsdp_dtensor"] and result["crashed"]
    a = load_file(str(dist_run / "fsdp" / "model.safetensors"))
    b = load_file(str(dist_run / "fsdp_resumed" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.dist
@pytest.mark.parametrize("fmt", ["png", "npz"])
def test_distributed_writer_no_gaps_no_duplicates(dist_run, tmp_path, fmt):
    result = json.loads((dist_run / "result.json").read_text())
    assert result[f"written_{fmt}"] == 11  # rank 0 of 2 takes indices 0, 2, ..., 20
    folder = dist_run / f"samples_{fmt}"
    assert check_samples(folder, 21).ok
    packed = np.load(pack_npz(folder, tmp_path / "pack.npz"))
    expected = np.load(pack_npz(_single_writer(tmp_path / "one", fmt), tmp_path / "one.npz"))
    np.testing.assert_array_equal(packed["arr_0"], expected["arr_0"])  # same image at every global index
    np.testing.assert_array_equal(packed["arr_1"], np.arange(21) % 10)


def _single_writer(folder: Path, fmt: str) -> Path:
    write_samples(
        sample_fn, folder, 21, labels=10, batch_size=5, fmt=fmt, rank=0, world_size=1, progress=False
    )
    return folder


# ------------------------------------------------------------------------------ writer, single process
def test_writer_resume_skips_existing_and_packs_adm(tmp_path):
    calls = []

    def counting(labels_B, idx_B):
        calls.append(len(labels_B))
        return sample_fn(labels_B, idx_B)

    first = write_samples(
        counting,
        tmp_path,
        10,
        labels=list(range(10)),
        batch_size=3,
        fmt="npz",
        rank=1,
        world_size=2,
        progress=False,
    )  # as if rank 0 had died: odd indices only
    assert first.written == 5 and first.missing == [0, 2, 4, 6, 8] and not first.ok
    calls.clear()
    second = write_samples(
        counting,
        tmp_path,
        10,
        labels=list(range(10)),
        batch_size=3,
        fmt="npz",
        rank=0,
        world_size=1,
        progress=False,
    )
    assert second.ok and second.written == 5 and sum(calls) == 5
    packed = np.load(pack_npz(tmp_path, tmp_path.parent / "adm.npz"))
    assert packed["arr_0"].dtype == np.uint8 and packed["arr_0"].shape == (10, 4, 4, 3)
    np.testing.assert_array_equal(packed["arr_1"], np.arange(10))
    np.testing.assert_array_equal(packed["arr_0"][:, 0, 0, 0], np.round(np.arange(10) / 250 * 255))


def test_check_reports_gaps_and_duplicates(tmp_path):
    write_samples(
        sample_fn, tmp_path, 6, labels=3, batch_size=2, fmt="png", rank=0, world_size=1, progress=False
    )
    (tmp_path / "000003.png").unlink()
    np.savez(
        tmp_path / "shard_000001_000001.npz",
        indices=np.array([1]),
        images=np.zeros((1, 4, 4, 3), np.uint8),
        labels=np.array([1]),
    )
    report = check_samples(tmp_path, 6)
    assert report.missing == [3] and report.duplicates == [1] and not report.ok
    with pytest.raises(ValueError, match="missing"):
        pack_npz(tmp_path, num_samples=6)


def test_single_process_fallback_and_fsdp_units(monkeypatch):
    from argen.distributed import fsdp_units, init_distributed, wrap_model

    monkeypatch.delenv("RANK", raising=False)
    info = init_distributed("cpu")
    assert (info.rank, info.world_size, info.is_main, info.device.type) == (0, 1, True, "cpu")
    model = ToyNet(ToyConfig(depth=3, dropout=0.0))
    assert fsdp_units(model) == list(model.blocks)
    model.fsdp_units = lambda: [model.head]
    assert fsdp_units(model) == [model.head]
    assert wrap_model(model, "fsdp") is model  # no process group: plain model
    with pytest.raises(ValueError, match="strategy"):
        wrap_model(model, "zero3")


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
