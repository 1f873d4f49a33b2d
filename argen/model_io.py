"""Model files and the kind registry: argen's own format (safetensors + JSON config) and readers for
official checkpoints. It sits below every package that defines models (tokenizers, models), so they register
and load weights without importing each other; `argen.models.checkpoints.load_model` builds any kind.

argen format: `NAME.safetensors` (weights) beside `NAME.json` = {"kind", "config", "argen_version"}.
Official files (`.pth`/`.pt`) are read with `torch.load(weights_only=True)` and then adapted by named
functions next to each model (`load_official_*`), which end in `load_strict`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

import argen
from argen.config import to_dict
from argen.io import atomic_write_text


class CheckpointError(ValueError):
    """A model file is missing, corrupt or does not match the model it is loaded into."""


# kind -> (config dataclass, model class). Filled by `register` in each model module.
KINDS: dict[str, tuple[type, type[nn.Module]]] = {}


def register(kind: str, config_cls: type) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a model loadable by kind from argen files."""

    def deco(model_cls: type[nn.Module]) -> type[nn.Module]:
        KINDS[kind] = (config_cls, model_cls)
        model_cls.kind = kind
        return model_cls

    return deco


def tokenizer_fingerprint(tokenizer: nn.Module) -> str:
    """A short hash of a tokenizer's codebook (rounded to bf16, so fp32 and bf16 copies agree): generators
    record the one they were trained with, and a different codebook of the same shape is caught."""
    import hashlib

    book = tokenizer.quantize.embedding.weight.detach().to(torch.bfloat16).cpu()
    return hashlib.sha256(book.view(torch.int16).numpy().tobytes()).hexdigest()[:16]


def save_model(
    model: nn.Module,
    path: str | Path,
    dtype: torch.dtype | None = None,
    trained_with: dict | None = None,
    sampling: dict | None = None,
) -> Path:
    """Write `path` (.safetensors) and its `.json` config. The model needs `.config` and a registered kind.

    trained_with: facts about the training run kept in the JSON (tokenizer fingerprint, objective options).
    sampling: the generator's own sampling defaults (SamplingConfig fields, e.g. {"cfg_scale": 2.5}), used
        where a caller does not set them; the family's defaults fill the rest.
    """
    path = Path(path).with_suffix(".safetensors")
    write_model_files(model, path, path.with_suffix(".json"), dtype, trained_with, sampling)
    return path


def write_model_files(
    model: nn.Module,
    weights: Path,
    config: Path,
    dtype: torch.dtype | None,
    trained_with: dict | None,
    sampling: dict | None = None,
) -> dict[str, Any]:
    """Write the weights and the JSON config of `model` to the given paths (atomically); returns the
    config written. `save_model` (NAME.safetensors + NAME.json) and `save_pretrained` (a folder) use it."""
    weights.parent.mkdir(parents=True, exist_ok=True)
    # dtype applies to float tensors only: integer buffers (ActVAR's expert permutation) must stay exact
    state = {
        k: v.detach().to(dtype if dtype and v.is_floating_point() else v.dtype).contiguous().cpu()
        for k, v in model.state_dict().items()
    }
    meta = {"kind": model.kind, "config": to_dict(model.config), "argen_version": argen.__version__}
    if trained_with:
        meta["trained_with"] = trained_with
    if sampling:
        meta["sampling"] = sampling
    tmp = weights.with_suffix(".safetensors.tmp")
    try:
        save_file(state, str(tmp), metadata={"argen": json.dumps(meta)})
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors writes 0600; a model file is as shareable as its JSON
        tmp.replace(weights)
    finally:
        tmp.unlink(missing_ok=True)  # a failed write (disk full) leaves no partial file behind
    atomic_write_text(config, json.dumps(meta, indent=2) + "\n")
    return meta


ASSETS = Path(__file__).resolve().parent / "assets"


def resolve_model_path(path: str | Path) -> Path:
    """A model path as given, or the name of a shipped model (`ear_fmnist` -> argen/assets/ear_fmnist), so
    shipped models load by name from any working directory."""
    path = Path(path)
    given = path if path.suffix == ".safetensors" else path.with_suffix(".safetensors")
    if path.exists() or given.exists():
        return path
    if path.suffix == ".safetensors" and path.with_suffix("").is_dir():
        return path.with_suffix("")  # NAME.safetensors of a model now kept as a folder NAME/
    if len(path.parts) == 1 and (ASSETS / path.with_suffix("").name).is_dir():
        return ASSETS / path.with_suffix("").name
    return path


def recorded_tokenizer(path: str | Path) -> str | None:
    """The tokenizer a generator's file records it was trained with, where that tokenizer is found: the
    recorded file (relative to the working directory) or a shipped model of the same name; None otherwise."""
    recorded = (read_meta(path).get("trained_with") or {}).get("tokenizer") or {}
    file = recorded.get("file")
    if not file:
        return None
    for candidate in (file, Path(file).with_suffix("").name):
        weights, _ = model_files(candidate)
        if weights.is_file():
            return str(resolve_model_path(candidate))
    return None


# A model folder (Hugging Face layout, written by `argen.models.pretrained.save_pretrained`).
FOLDER_WEIGHTS, FOLDER_CONFIG = "model.safetensors", "config.json"


def model_files(path: str | Path) -> tuple[Path, Path]:
    """(weights, JSON config) of a model: `NAME[.safetensors]` (+ `NAME.json`), a folder holding
    `model.safetensors` + `config.json` (or + `model.json`: a training run's output folder, whose
    config.json is the run's config), or a shipped model's name."""
    path = resolve_model_path(path)
    if path.is_dir():
        weights = path / FOLDER_WEIGHTS
        run_export = weights.with_suffix(".json")
        return weights, run_export if run_export.is_file() else path / FOLDER_CONFIG
    weights = path if path.suffix == ".safetensors" else path.with_suffix(".safetensors")
    return weights, weights.with_suffix(".json")


def file_digest(path: str | Path) -> str:
    """sha256 (first 16 hex digits) of a model's weights file: identifies exactly what sampled."""
    import hashlib

    weights, _ = model_files(path)
    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_meta(path: str | Path) -> dict[str, Any]:
    _, meta_path = model_files(path)
    if not meta_path.is_file():
        layout = (
            "a model folder holds model.safetensors + config.json"
            if meta_path.parent.is_dir() and meta_path.name == FOLDER_CONFIG
            else "argen model files are NAME.safetensors + NAME.json"
        )
        raise CheckpointError(f"{meta_path} not found: {layout}")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{meta_path} is not valid JSON ({e}); re-export the model") from e
    if not isinstance(meta, dict) or "kind" not in meta or not isinstance(meta.get("config"), dict):
        raise CheckpointError(
            f'{meta_path} is not an argen model config (it needs "kind" and a "config" object); '
            "write the model with save_model / save_pretrained"
        )
    return meta


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); re-export it") from e


def read_official(path: str | Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """Read an official `.pth`/`.pt` checkpoint safely (weights only); take `ckpt[key]` when it is there."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or non-weights pickles
        raise CheckpointError(
            f"{path} could not be read as a weights-only PyTorch checkpoint ({type(e).__name__}: {e}). "
            "It may be truncated or contain pickled objects; re-download the official file."
        ) from e
    if key is not None and isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
        obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors (keys: {list(obj)[:8]})")
    return obj


def drop_keys(state: dict[str, torch.Tensor], patterns: Iterable[str]) -> dict[str, torch.Tensor]:
    """Remove keys matching any regex in `patterns` (derivable buffers such as `attn_bias_for_masking`)."""
    regs = [re.compile(p) for p in patterns]
    return {k: v for k, v in state.items() if not any(r.fullmatch(k) for r in regs)}


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
    """`load_state_dict(strict=True)` with a readable report of missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        config = getattr(model, "config", None)
        lines = [f"{source} does not match {type(model).__name__}{' ' + str(config) if config else ''}"]
        problems = (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes))
        for what, keys in problems:
            if keys:
                lines.append(f"  {what} ({len(keys)}): {keys[:6]}{' ...' if len(keys) > 6 else ''}")
        lines.append("  Check that the model config (preset, sizes, vocabulary) matches the file.")
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state, strict=True)
