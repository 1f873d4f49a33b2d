"""torchrun process-group setup (nccl on GPU, gloo on CPU, single-process fallback) and DDP / FSDP2 wrapping.

Used only by training, sampling and the CLI; models never see ranks.
"""

from __future__ import annotations

import atexit
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

STRATEGIES = ("none", "ddp", "fsdp")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: rank among world_size processes, its local GPU index and device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """ "auto" -> this rank's GPU when CUDA is available, else CPU; "cpu", "cuda", "cuda:N" as given.

    Raises:
        ValueError: an unknown device name, or CUDA asked of a torch build or machine without it.
    """
    if device == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {device!r} is not a device name: use auto, cpu, cuda or cuda:N") from e
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: argen runs on auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        build = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise ValueError(f"device {device!r}: {build} (torch {torch.__version__}); use --device cpu or auto")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group if launched by torchrun, else run as a single process.

    The backend follows the device: nccl for CUDA, gloo for CPU. Safe to call many times: the group is
    created once per process and destroyed at exit (or by `cleanup`), because creating it again after
    `destroy_process_group` can deadlock (ranks rendezvous on stale store keys).
    """
    if not launched_by_torchrun():
        return DistInfo(0, 1, 0, resolve_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if dev.type == "cuda" else "gloo", device_id=dev if dev.type == "cuda" else None
        )
        atexit.register(_destroy_at_exit)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev)


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Destroy the process group (if any) after a final barrier; call once, at the end of a program."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _destroy_at_exit() -> None:
    # No barrier: a rank exiting on an error must not wait for the others.
    if dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed python, numpy and torch (all devices) with `seed + rank` so ranks draw different noise."""
    s = seed + rank
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (no-op in a single process); returns `t`."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a one-element list in a single process)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The submodules sharded one by one under FSDP2: `model.fsdp_units()` if defined, else the entries of
    `model.blocks` or `model.layers` (ModuleLists), else none (only the root is sharded)."""
    hook = getattr(model, "fsdp_units", None)
    if callable(hook):
        return list(hook())
    for attr in ("blocks", "layers"):
        mods = getattr(model, attr, None)
        if isinstance(mods, nn.ModuleList):
            return list(mods)
    return []


def wrap_model(
    model: nn.Module,
    strategy: str,
    device: torch.device | None = None,
    bf16: bool = False,
    checkpointing: bool = False,
) -> nn.Module:
    """Wrap a model already on its device for data-parallel training.

    Args:
        strategy: "none"; "ddp" (DistributedDataParallel); "fsdp" (FSDP2: `fully_shard` on each unit of
            `fsdp_units`, then on the root; the model changes in place, its parameters become DTensors).
        device: the model's device (for DDP's device_ids on CUDA).
        bf16: under "fsdp", the mixed-precision policy: parameters gathered and computed in bf16, gradients
            reduced in fp32, fp32 sharded master weights (the optimizer's), fp32 outputs of the root.
        checkpointing: activation checkpointing of every unit of `fsdp_units` (recomputed in backward), under
            any strategy.

    Without a process group (world size 1), "ddp" and "fsdp" fall back to the plain model.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if checkpointing:
        from torch.distributed._composable import checkpoint

        for unit in fsdp_units(model):
            checkpoint(unit)  # composable: parameter names and the module tree stay as they are
    if strategy == "none" or not dist.is_initialized():
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device is not None and device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    low = (torch.bfloat16, torch.float32) if bf16 else (None, None)
    for unit in fsdp_units(model):
        fully_shard(unit, mp_policy=MixedPrecisionPolicy(*low))
    fully_shard(model, mp_policy=MixedPrecisionPolicy(*low, torch.float32 if bf16 else None))
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module under a DDP wrapper (FSDP2 wraps in place, so it is returned as is)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
