"""Resumable training state: model, EMA, optimizer, scheduler, step, RNG states and config.

A checkpoint is a directory `step_XXXXXXXX/` holding `state.safetensors` (every tensor) and `state.json`
(config, step, optimizer structure, scheduler, RNG scalars, the weights file's size and sha256). It is written
into a hidden temporary directory, fsynced and renamed, so a crash never leaves a half-written checkpoint
under a valid name. Nothing is unpickled when reading.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from argen.models.checkpoints import CheckpointError

FORMAT = "argen-train-state/1"
_STEP_DIR = re.compile(r"step_(\d{8})")
_WEIGHTS, _META = "state.safetensors", "state.json"


@dataclass
class TrainingState:
    """Everything needed to continue a run exactly. Tensors are full (unsharded) CPU tensors.

    optimizer: `get_optimizer_state_dict` format (state keyed by parameter name, param_groups with names).
    rng: one entry per rank (python, numpy, torch, cuda states) so every rank resumes its own streams.
    """

    step: int
    config: dict[str, Any]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] = field(default_factory=dict)
    ema: dict[str, torch.Tensor] | None = None
    ema_updates: int = 0
    rng: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------- RNG
def capture_rng() -> dict[str, Any]:
    """This process's python / numpy / torch (and CUDA, when initialised) generator states."""
    version, keys, gauss = random.getstate()
    _, np_keys, pos, has_gauss, cached = np.random.get_state()
    out = {
        "python": [version, list(keys), gauss],
        "numpy": {
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: dict[str, Any]) -> None:
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------- (de)serialising
def _flatten(state: TrainingState) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {f"model/{k}": v for k, v in state.model.items()}
    tensors.update({f"ema/{k}": v for k, v in (state.ema or {}).items()})
    optim_scalars: dict[str, dict[str, Any]] = {}
    for name, entry in state.optimizer.get("state", {}).items():
        for key, val in entry.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim/{name}/{key}"] = val
            else:
                optim_scalars.setdefault(name, {})[key] = val
    rng_json = []
    for r, rs in enumerate(state.rng):
        tensors[f"rng/{r}/torch"] = rs["torch"]
        tensors[f"rng/{r}/numpy"] = rs["numpy"]["keys"]
        for i, t in enumerate(rs.get("cuda", [])):
            tensors[f"rng/{r}/cuda/{i}"] = t
        np_meta = {k: v for k, v in rs["numpy"].items() if k != "keys"}
        rng_json.append({"python": rs["python"], "numpy": np_meta, "num_cuda": len(rs.get("cuda", []))})
    meta = {
        "format": FORMAT,
        "step": state.step,
        "config": state.config,
        "scheduler": state.scheduler,
        "ema_updates": state.ema_updates,
        "has_ema": state.ema is not None,
        "rng": rng_json,
        "optimizer": {
            "param_groups": state.optimizer.get("param_groups", []),
            "scalars": optim_scalars,
            "names": sorted(state.optimizer.get("state", {})),
        },
    }
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    return tensors, meta


def _unflatten(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> TrainingState:
    model = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema/")} if meta["has_ema"] else None
    optim_meta = meta["optimizer"]
    ostate: dict[str, dict[str, Any]] = {
        n: dict(optim_meta["scalars"].get(n, {})) for n in optim_meta["names"]
    }
    for k, v in tensors.items():
        if k.startswith("optim/"):
            name, key = k[6:].rsplit("/", 1)
            ostate.setdefault(name, {})[key] = v
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in optim_meta["param_groups"]]
    rng = []
    for r, rj in enumerate(meta["rng"]):
        rs = {
            "python": rj["python"],
            "torch": tensors[f"rng/{r}/torch"],
            "numpy": {"keys": tensors[f"rng/{r}/numpy"], **rj["numpy"]},
        }
        if rj["num_cuda"]:
            rs["cuda"] = [tensors[f"rng/{r}/cuda/{i}"] for i in range(rj["num_cuda"])]
        rng.append(rs)
    return TrainingState(
        step=meta["step"],
        config=meta["config"],
        model=model,
        optimizer={"state": ostate, "param_groups": groups},
        scheduler=meta["scheduler"],
        ema=ema,
        ema_updates=meta["ema_updates"],
        rng=rng,
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------ files on disk
def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories in `ckpt_dir`, oldest first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.iterdir() if p.is_dir() and _STEP_DIR.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(p.name[5:]))


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1] if found else None


def is_checkpoint(path: str | Path) -> bool:
    """Whether `path` is one checkpoint directory (`step_XXXXXXXX/` holding its state.json)."""
    return (Path(path) / _META).is_file()


def save_checkpoint(ckpt_dir: str | Path, state: TrainingState, keep_last: int = 2) -> Path:
    """Write `state` atomically as `ckpt_dir/step_XXXXXXXX/` and delete all but the newest `keep_last`.

    Call on one rank only (the gathering of `state` is collective, the writing is not).
    """
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / f"step_{state.step:08d}"
    tmp = ckpt_dir / f".{final.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tensors, meta = _flatten(state)
    save_file(tensors, str(tmp / _WEIGHTS))
    _fsync(tmp / _WEIGHTS)
    meta["weights"] = {
        "file": _WEIGHTS,
        "bytes": (tmp / _WEIGHTS).stat().st_size,
        "sha256": _sha256(tmp / _WEIGHTS),
    }
    with open(tmp / _META, "w") as f:
        json.dump(meta, f)
        f.flush()
        os.fsync(f.fileno())
    _fsync(tmp)
    if final.exists():  # same step written again (e.g. the final save after a resume at that step)
        old = ckpt_dir / f".{final.name}.old{os.getpid()}"
        final.replace(old)
        tmp.replace(final)
        shutil.rmtree(old)
    else:
        tmp.replace(final)
    _fsync(ckpt_dir)
    for stale in ckpt_dir.glob(".step_*.tmp*"):
        shutil.rmtree(stale, ignore_errors=True)
    for old in list_checkpoints(ckpt_dir)[: -max(1, keep_last)]:
        shutil.rmtree(old)
    return final


def load_checkpoint(path: str | Path) -> TrainingState:
    """Read and verify (size, sha256) a checkpoint directory; raises CheckpointError if it is damaged."""
    path = Path(path)
    hint = (
        f"Delete {path} to resume from the previous checkpoint "
        f"({[p.name for p in list_checkpoints(path.parent)]}),"
        " or start the run in a new out_dir."
    )
    try:
        meta = json.loads((path / _META).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {path} has no readable {_META} ({e}). {hint}") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {meta.get('format')!r}, expected {FORMAT!r}. {hint}"
        )
    weights = path / meta["weights"]["file"]
    if (
        not weights.is_file()
        or weights.stat().st_size != meta["weights"]["bytes"]
        or _sha256(weights) != meta["weights"]["sha256"]
    ):
        raise CheckpointError(
            f"checkpoint {path} is corrupt: {weights.name} is missing or its size/sha256 "
            f"differs from {_META}. {hint}"
        )
    try:
        tensors = load_file(str(weights))
        return _unflatten(tensors, meta)
    except (KeyError, ValueError, OSError) as e:
        raise CheckpointError(f"checkpoint {path} is inconsistent ({type(e).__name__}: {e}). {hint}") from e


# --------------------------------------------------------------------------------------- compatibility
_IDENTITY_KEYS = ("task", "model")


def check_compatible(saved: dict[str, Any], current: dict[str, Any], source: str) -> None:
    """Refuse to resume a run with a different task or model config (the weights would not fit)."""
    for key in _IDENTITY_KEYS:
        if saved.get(key) != current.get(key):
            raise CheckpointError(
                f"{source} was written for {key}={json.dumps(saved.get(key))}, but this run has "
                f"{key}={json.dumps(current.get(key))}. Use the original config or a new out_dir."
            )


def check_shapes(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Readable report when `state` does not fit `model` (FSDP2 models too: DTensor shapes are global)."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {own[k]}"
        for k in own
        if k in state and tuple(state[k].shape) != own[k]
    ]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{source} does not fit {type(model).__name__}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, "
            f"shape mismatches {shapes[:4]}. Check the model config, or use a new out_dir."
        )


# --------------------------------------------------------------------------------- live objects <-> state
def gather_training_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    ema: Any,
    step: int,
    config: dict[str, Any],
) -> TrainingState | None:
    """Collect the full training state on rank 0 (collective: every rank must call it; others get None).

    `model` is the unwrapped module (FSDP2 modules are gathered through the distributed state-dict helpers).
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    from argen.distributed import all_gather_object, get_rank

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_sd = get_model_state_dict(model, options=opts)
    optim_sd = get_optimizer_state_dict(model, optimizer, options=opts)
    ema_sd = ema.full_state_dict(keep=get_rank() == 0) if ema is not None else None
    rng = all_gather_object(capture_rng())
    if get_rank() != 0:
        return None
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"} if scheduler else {}
    return TrainingState(
        step=step,
        config=config,
        model=model_sd,
        optimizer=optim_sd,
        scheduler=sched,
        ema=ema_sd,
        ema_updates=ema.num_updates if ema is not None else 0,
        rng=rng,
    )


def apply_training_state(
    state: TrainingState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    ema: Any,
    source: str,
) -> None:
    """Load a full state into live (possibly FSDP2-sharded) objects on every rank, RNG included.

    Ranks beyond those saved (a resume on more processes) keep their fresh seeding.
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    from argen.distributed import get_rank

    check_shapes(model, state.model, source)
    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, state.model, options=opts)
    # The helper sizes the optimizer state by a zero-lr dummy step, which it skips when gradients exist.
    optimizer.zero_grad(set_to_none=True)
    set_optimizer_state_dict(model, optimizer, state.optimizer, options=opts)
    if scheduler is not None and state.scheduler:
        scheduler.load_state_dict({**scheduler.state_dict(), **state.scheduler})
    if ema is not None:
        if state.ema is None:
            raise CheckpointError(
                f"{source} has no EMA weights but this run uses EMA; set ema_decay=0 or start a new out_dir"
            )
        ema.load_full_state_dict(state.ema, state.ema_updates)
    if get_rank() < len(state.rng):
        restore_rng(state.rng[get_rank()])
