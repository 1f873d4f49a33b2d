"""The one trainer: any registered task, single process or torchrun (DDP / FSDP2), resumable bit for bit.

Each optimizer step consumes `batch_size` samples: world_size ranks x grad_accum micro-batches. The data order
is a pure function of (seed, step), so a resumed run sees exactly the batches an uninterrupted one would.
Only rank 0 writes files (metrics.jsonl, config.json, checkpoints/, model.safetensors).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from argen.config import TrainConfig, replace, to_dict
from argen.device import bf16_is_fast
from argen.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    init_distributed,
    seed_everything,
    wrap_model,
)
from argen.io import atomic_write_text
from argen.models.checkpoints import (
    CheckpointError,
    load_strict,
    model_files,
    read_safetensors,
    save_model,
)
from argen.training import checkpoint as ckpt
from argen.training.batches import step_batches, to_device
from argen.training.ema import EMA
from argen.training.metrics_log import MetricsLog
from argen.training.optim import Stage, build_optimizer, build_scheduler
from argen.training.tasks import Task, get_task


class NonFiniteLossError(RuntimeError):
    """The loss (or gradient norm) became NaN/inf; the run stopped before the optimizer step."""


# -------------------------------------------------------------------------------------------- the run
class _DDPView:
    """What a task's loss sees under DDP: calls go through the DDP wrapper (so gradients are synchronised),
    attributes (`.config`, helper methods) come from the user's module."""

    def __init__(self, ddp: nn.Module):
        self._ddp = ddp

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._ddp(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ddp.module, name)


@dataclass
class _Run:
    cfg: TrainConfig
    info: DistInfo
    task: Task
    model: nn.Module  # as wrapped (DDP / FSDP2 / plain)
    module: nn.Module  # the user's module (same object as `model` under FSDP2 and "none")
    stages: tuple[Stage, ...]
    ema: EMA | None
    out: Path
    stage: int = -1  # index into `stages` of the optimizer and scheduler below (set by `_enter_stage`)
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
    step: int = 0
    saved_step: int = -1  # newest step on disk; same on every rank, so all ranks agree to skip a save

    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    @property
    def staged(self) -> bool:
        return self.task.stages is not None

    def stage_of(self, step: int) -> int:
        """Index of the stage that takes optimizer step `step` (0-based; the last stage past the end)."""
        end = 0
        for i, stage in enumerate(self.stages):
            end += stage.steps
            if step < end:
                return i
        return len(self.stages) - 1

    def stage_end(self, index: int) -> int:
        return sum(s.steps for s in self.stages[: index + 1])

    def loss_model(self) -> Any:
        return _DDPView(self.model) if self.model is not self.module else self.module

    def grad_sync(self, enabled: bool) -> contextlib.AbstractContextManager:
        """Skip gradient all-reduce on accumulation micro-steps other than the last."""
        if self.model is not self.module and not enabled:  # DDP
            return self.model.no_sync()
        if hasattr(self.model, "set_requires_gradient_sync"):  # FSDP2
            self.model.set_requires_gradient_sync(enabled)
        return contextlib.nullcontext()

    def state(self) -> ckpt.TrainingState | None:
        return ckpt.gather_training_state(
            self.module, self.optimizer, self.scheduler, self.ema, self.step, to_dict(self.cfg)
        )


def _stages(task: Task, cfg: TrainConfig) -> tuple[Stage, ...]:
    if task.stages is None:
        return (Stage(cfg.steps, cfg.optim),)
    stages = tuple(task.stages(cfg))
    if sum(s.steps for s in stages) != cfg.steps:
        raise ValueError(
            f"the stages of task {cfg.task} take {[s.steps for s in stages]} steps but steps={cfg.steps}: "
            "set steps to their sum"
        )
    return stages


def _enter_stage(run: _Run, index: int) -> None:
    """Freeze what the stage does not train, then a fresh optimizer and schedule over what it trains.

    Under DDP the model is wrapped again: DDP reduces the gradients of the parameters that required them
    when it was built. FSDP2 follows `requires_grad` as it gathers, so its in-place wrapping stays.
    """
    stage = run.stages[index]
    if stage.trainable is not None:
        for name, p in run.module.named_parameters():
            p.requires_grad_(stage.trainable(name))
        if run.model is not run.module:  # DDP
            run.model = wrap_model(run.module, "ddp", run.info.device)
    run.optimizer = build_optimizer(run.module, stage.optim)
    run.scheduler = build_scheduler(run.optimizer, stage.optim, stage.steps)
    run.stage = index


def _init_weights(init: str) -> dict[str, torch.Tensor]:
    """Weights a run starts from: an argen model file or folder, or a training checkpoint `step_XXXXXXXX/`
    (its EMA weights when the run kept EMA; e.g. any-schedule EAR forked from an EAR run part-way)."""
    if ckpt.is_checkpoint(init):
        state = ckpt.load_checkpoint(init)
        return {**state.model, **(state.ema or {})}
    weights, _ = model_files(init)
    if not weights.is_file():
        raise CheckpointError(
            f"init={init!r}: no such model file (give an argen .safetensors file or model folder, or a "
            "training checkpoint step_XXXXXXXX/)"
        )
    return read_safetensors(weights)


def _build(cfg: TrainConfig, info: DistInfo) -> _Run:
    task = get_task(cfg.task)
    stages = _stages(task, cfg)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    module = task.build_model(cfg.model)
    if cfg.init:
        load_strict(module, _init_weights(cfg.init), source=str(cfg.init))
    module = module.to(info.device)
    model = wrap_model(
        module, cfg.strategy, info.device, cfg.precision == "bf16", cfg.activation_checkpointing
    )
    ema = EMA(module, cfg.ema_decay) if cfg.ema_decay > 0 else None  # every parameter a stage may train
    run = _Run(cfg, info, task, model, module, stages, ema, Path(cfg.out_dir))
    _enter_stage(run, run.stage_of(0))
    seed_everything(cfg.seed, info.rank)
    return run


def _maybe_resume(run: _Run) -> None:
    """Load the newest checkpoint (per cfg.resume) after checking it fits; nothing is written before this."""
    latest = ckpt.latest_checkpoint(run.ckpt_dir)
    if run.cfg.resume == "always" and latest is None:
        raise CheckpointError(f"resume='always' but {run.ckpt_dir} holds no checkpoint")
    if run.cfg.resume == "never":
        if latest is not None:
            raise CheckpointError(
                f"{run.out} already holds checkpoints ({latest.name}); resume='never' would "
                "overwrite them. Use resume='auto' or a new out_dir."
            )
        return
    if latest is None:
        start = f"initialised from {run.cfg.init}" if run.cfg.init else f"random init (seed {run.cfg.seed})"
        _say(run, f"argen train {run.cfg.task}: new run in {run.out}, {start}")
        return
    state = ckpt.load_checkpoint(latest)
    ckpt.check_compatible(state.config, to_dict(run.cfg), str(latest))
    # the checkpoint holds the optimizer of the stage that took its last step (at a stage boundary, the
    # stage that ended: the training loop then starts the next one, as an uninterrupted run does)
    last = run.stage_of(max(state.step - 1, 0))
    if last != run.stage:
        _enter_stage(run, last)
    ckpt.apply_training_state(state, run.module, run.optimizer, run.scheduler, run.ema, str(latest))
    run.step = run.saved_step = state.step
    where = f" (stage {run.stage_of(state.step) + 1} of {len(run.stages)})" if run.staged else ""
    _say(
        run,
        f"argen train {run.cfg.task}: resumed from {latest} at step {state.step} of {run.cfg.steps}{where}",
    )
    changed = {
        k: (state.config.get(k), v)
        for k, v in to_dict(run.cfg).items()
        if k in ("batch_size", "grad_accum", "steps", "precision", "optim", "objective")
        and state.config.get(k) != v
    }
    for key, (before, now) in changed.items():
        _say(run, f"  note: {key} changed since the checkpoint: {json.dumps(before)} -> {json.dumps(now)}")


def _say(run: _Run, line: str) -> None:
    """A start-of-run line on rank 0 (stderr, so JSON on stdout stays clean)."""
    if run.info.is_main:
        print(line, file=sys.stderr, flush=True)


def _train_step(run: _Run, micro: list[Any]) -> tuple[float, float, dict[str, float]]:
    """Forward/backward over the micro-batches, then clip and step. Returns (loss, grad_norm, metrics)."""
    cfg, dev = run.cfg, run.info.device
    run.model.train()
    loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
    metrics: dict[str, float] = {}
    stage = run.stages[run.stage]
    opts = {**cfg.objective, **stage.options, "step": run.step}  # step: GAN warm-up, progressive scales
    for i, batch in enumerate(micro):
        last = i == len(micro) - 1
        with run.grad_sync(last), torch.autocast(dev.type, torch.bfloat16, enabled=cfg.precision == "bf16"):
            loss, m = run.task.loss(run.loss_model(), to_device(batch, dev), opts)
            (loss / len(micro)).backward()
        loss_sum += loss.detach().double()
        for k, v in m.items():
            metrics[k] = metrics.get(k, 0.0) + float(v) / len(micro)
    loss_mean = float(all_reduce_sum(loss_sum) / (len(micro) * run.info.world_size))
    params = [p for p in run.module.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(
        params, stage.optim.grad_clip if stage.optim.grad_clip > 0 else math.inf
    )
    norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    if not (math.isfinite(loss_mean) and math.isfinite(norm)):
        run.optimizer.zero_grad(set_to_none=True)
        latest = ckpt.latest_checkpoint(run.ckpt_dir)
        raise NonFiniteLossError(
            f"non-finite loss {loss_mean} (grad norm {norm}) at step {run.step + 1}; "
            "stopped before the update. "
            f"Last good checkpoint: {latest or 'none'} (kept). Lower optim.lr or check the data, then resume."
        )
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    if run.ema is not None:
        run.ema.update(run.module)
    return loss_mean, norm, metrics


def _save(run: _Run) -> None:
    if run.saved_step == run.step:
        return
    state = run.state()
    if state is not None:
        ckpt.save_checkpoint(run.ckpt_dir, state, run.cfg.keep_last)
    run.saved_step = run.step
    barrier()


def _export(run: _Run, trained_with: dict) -> Path:
    """Write out_dir/<export_name>.safetensors (+ .json): the EMA weights when EMA is on, else the live
    weights."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(run.module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    ema = run.ema.full_state_dict(keep=run.info.is_main) if run.ema is not None else {}
    path = run.out / f"{run.task.export_name}.safetensors"
    if run.info.is_main:
        state.update({k: v.to(state[k].dtype) for k, v in ema.items()})
        fresh = run.task.build_model(run.cfg.model)
        load_strict(fresh, state, source="trained weights")
        # training wrappers (a tokenizer with its GAN discriminator) export only the model itself
        save_model(getattr(fresh, "export_model", lambda: fresh)(), path, trained_with=trained_with)
    barrier()
    return path


def default_provenance(cfg: TrainConfig, dataset: Any) -> dict:
    """What the exported model JSON records of its training: the tokenizer that wrote the token file (so a
    generator sampled with another codebook is refused) and the objective options (plain values only)."""
    meta = getattr(dataset, "metadata", {}) or {}
    out = {"objective": {k: v for k, v in cfg.objective.items() if isinstance(v, str | int | float | bool)}}
    if "tokenizer_fingerprint" in meta:
        out["tokenizer"] = {"fingerprint": meta["tokenizer_fingerprint"], "file": meta.get("tokenizer")}
    return out


def training_record(task: Task, cfg: TrainConfig, dataset: Any, step: int) -> dict:
    """An exported model's `trained_with`: the task's provenance plus the step and the images seen."""
    record = (task.provenance or default_provenance)(cfg, dataset)
    return {**record, "step": step, "images_seen": step * cfg.batch_size * cfg.grad_accum}


# ----------------------------------------------------------------------------------------------- entry
def train(cfg: TrainConfig, resume: bool | str | None = None) -> Path:
    """Train `cfg.task` as configured; returns the exported model path (out_dir/model.safetensors, or the
    task's `export_name`).

    Launch with `torchrun --nproc_per_node N` for multi-process DDP/FSDP2; a plain call is one process.

    Args:
        resume: overrides `cfg.resume`: True = "always" (a checkpoint must exist in out_dir/checkpoints),
            False = "never" (start fresh; refused if checkpoints exist), a string = that mode,
            None = `cfg.resume` (default "auto": continue if there is a checkpoint).

    Raises:
        NonFiniteLossError: the loss went NaN/inf (the last good checkpoint is kept).
        CheckpointError: the checkpoint to resume from is corrupt or belongs to another task/model.
    """
    if resume is not None:
        mode = ("always" if resume else "never") if isinstance(resume, bool) else resume
        cfg = replace(cfg, resume=mode)
    info = init_distributed(cfg.device)  # the group outlives this call (see init_distributed)
    return _train(cfg, info)


def resolve_precision(cfg: TrainConfig, device: torch.device) -> TrainConfig:
    """precision "auto" -> "bf16" (autocast; fp32 master weights and optimizer state) where the device has
    bf16 units (`argen.device.bf16_is_fast`: AMX/AVX512-BF16 CPUs, CUDA sm_80+), else "fp32"; the run
    records what it used."""
    if cfg.precision != "auto":
        return cfg
    return replace(cfg, precision="bf16" if bf16_is_fast(device) else "fp32")


def _train(cfg: TrainConfig, info: DistInfo) -> Path:
    cfg = resolve_precision(cfg, info.device)
    run = _build(cfg, info)
    _maybe_resume(run)
    dataset = run.task.build_dataset(cfg)
    batches = step_batches(dataset, cfg, info, run.step)  # checks sizes before anything is written
    logger = MetricsLog(run.out, run.step, info.is_main, cfg.tensorboard)
    if info.is_main:
        atomic_write_text(run.out / "config.json", json.dumps(to_dict(cfg), indent=2) + "\n")
    from tqdm.auto import tqdm

    bar = tqdm(
        total=cfg.steps, initial=run.step, disable=not info.is_main, desc=f"train {cfg.task}", unit="step"
    )
    t0, n0 = time.perf_counter(), run.step
    try:
        while run.step < cfg.steps:
            if run.stage_of(run.step) != run.stage:
                _enter_stage(run, run.stage_of(run.step))
            stage = {"stage": run.stage + 1} if run.staged else {}
            lr = run.optimizer.param_groups[0]["lr"]  # the rate this step uses (the scheduler moves it after)
            loss, norm, metrics = _train_step(run, next(batches))
            run.step += 1
            img_s = (run.step - n0) * cfg.batch_size / max(time.perf_counter() - t0, 1e-9)
            bar.update(1)
            bar.set_postfix(**stage, loss=f"{loss:.4f}", img_s=f"{img_s:.1f}")
            if run.step % cfg.log_every == 0 or run.step == cfg.steps:
                logger.log(
                    {
                        "step": run.step,
                        **stage,
                        "loss": loss,
                        "grad_norm": norm,
                        "lr": lr,
                        "img_per_s": img_s,
                        **{f"task/{k}": v for k, v in metrics.items()},
                    }
                )
            stage_done = run.step == run.stage_end(run.stage)  # a stage's last step: a resume point
            if (stage_done or (cfg.ckpt_every and run.step % cfg.ckpt_every == 0)) and run.step < cfg.steps:
                _save(run)
        _save(run)
        return _export(run, training_record(run.task, cfg, dataset, run.step))
    finally:
        bar.close()
        logger.close()
