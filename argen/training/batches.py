"""What each optimizer step trains on: a pure function of (seed, step), so resumed and multi-rank runs see the
batches an uninterrupted single-process run would."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from argen.config import TrainConfig
from argen.distributed import DistInfo


class _Window(Sampler[int]):
    """Indices [start, stop) of a sampler's epoch order: resumes mid-epoch and drops the ragged tail."""

    def __init__(self, base: Sampler[int], start: int, stop: int):
        self.base, self.start, self.stop = base, start, stop

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.base)[self.start : self.stop])

    def __len__(self) -> int:
        return self.stop - self.start


def micro_batch_size(cfg: TrainConfig, world_size: int) -> int:
    per = world_size * cfg.grad_accum
    if cfg.batch_size % per:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by world_size x grad_accum = {per}")
    return cfg.batch_size // per


def step_batches(dataset: Dataset, cfg: TrainConfig, info: DistInfo, start_step: int) -> Iterator[list[Any]]:
    """For each optimizer step from `start_step` on: this rank's list of grad_accum micro-batches.

    Epoch e shuffles with DistributedSampler(seed=cfg.seed).set_epoch(e); step s reads its slice of it.
    Rank r holds items r::world of that order, so the global batch of a step does not depend on the number
    of ranks. Sizes are checked here, before the first batch is drawn.
    """
    mb = micro_batch_size(cfg, info.world_size)
    sampler = DistributedSampler(
        dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    per_step = mb * cfg.grad_accum
    steps_per_epoch = len(sampler) // per_step
    if steps_per_epoch == 0:
        raise ValueError(
            f"dataset of {len(dataset)} items is smaller than one global batch ({cfg.batch_size})"
        )
    return _epochs(dataset, sampler, cfg, info, start_step, steps_per_epoch)


def _epochs(
    dataset: Dataset,
    sampler: DistributedSampler,
    cfg: TrainConfig,
    info: DistInfo,
    step: int,
    steps_per_epoch: int,
) -> Iterator[list[Any]]:
    mb = micro_batch_size(cfg, info.world_size)
    per_step = mb * cfg.grad_accum
    while True:
        epoch, offset = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch)
        if hasattr(dataset, "set_epoch"):  # augmentations drawn per (seed, epoch, item): see argen.data
            dataset.set_epoch(epoch)
        window = _Window(sampler, offset * per_step, steps_per_epoch * per_step)
        # A private generator keeps DataLoader from drawing on the global RNG (which the checkpoint restores).
        loader = DataLoader(
            dataset,
            batch_size=mb,
            sampler=window,
            drop_last=True,
            num_workers=cfg.data.num_workers,
            generator=torch.Generator().manual_seed(cfg.seed),
            pin_memory=info.device.type == "cuda",
        )
        it = iter(loader)
        for _ in range(steps_per_epoch - offset):
            yield [next(it) for _ in range(cfg.grad_accum)]
            step += 1


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch
