"""Every model kind argen can load, and `load_model`, which builds any of them from a file.

The file format, the registry and the official-checkpoint readers live one layer down in `argen.model_io`
(re-exported here: the import path the model modules, training code, scripts and tests use). The kinds are
defined in the modules below, imported on first load so that importing one model does not import all.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from argen.config import from_dict
from argen.model_io import (
    ASSETS,
    FOLDER_CONFIG,
    FOLDER_WEIGHTS,
    KINDS,
    CheckpointError,
    drop_keys,
    file_digest,
    load_strict,
    model_files,
    read_meta,
    read_official,
    read_safetensors,
    recorded_tokenizer,
    register,
    resolve_model_path,
    save_model,
    tokenizer_fingerprint,
    write_model_files,
)

__all__ = [
    "ASSETS",
    "FOLDER_CONFIG",
    "FOLDER_WEIGHTS",
    "CheckpointError",
    "drop_keys",
    "file_digest",
    "load_model",
    "load_strict",
    "model_files",
    "read_meta",
    "read_official",
    "read_safetensors",
    "recorded_tokenizer",
    "register",
    "resolve_model_path",
    "save_model",
    "tokenizer_fingerprint",
    "write_model_files",
]

# Modules that register a kind (models layer and below only: see tests/test_layering.py).
MODEL_MODULES = (
    "argen.tokenizers.vqgan",
    "argen.tokenizers.multiscale",
    "argen.models.gpt",
    "argen.models.var",
    "argen.models.actvar",
    "argen.models.classifier",
)


def _kinds() -> dict[str, tuple[type, type[nn.Module]]]:
    for mod in MODEL_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
    return KINDS


def load_model(
    path: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    expect: tuple[str, ...] | None = None,
) -> nn.Module:
    """Build and load an argen model (any registered kind) in eval mode: a model file, a model folder
    (`model.safetensors` + `config.json`, see `argen.models.pretrained`) or a shipped model's name.

    expect: the kinds the caller can use (e.g. ("vq", "msvq")); another kind is a CheckpointError that
    says what the file is.
    """
    weights, _ = model_files(path)
    if not weights.is_file():
        raise CheckpointError(f"model file {weights} not found")
    meta = read_meta(path)
    if expect is not None and meta.get("kind") not in expect:
        raise CheckpointError(
            f"{path} is a {meta.get('kind')} model; this needs a {' or '.join(expect)} model"
        )
    kinds = _kinds()
    if meta.get("kind") not in kinds:
        raise CheckpointError(f"{weights}: unknown model kind {meta.get('kind')!r}; known: {sorted(kinds)}")
    config_cls, model_cls = kinds[meta["kind"]]
    try:
        model = model_cls(from_dict(config_cls, meta["config"]))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"the config of {weights} does not build a {meta['kind']} model: {e}") from e
    state = read_safetensors(weights)
    load_strict(model, state, source=str(weights))
    return model.to(device=device, dtype=dtype).eval()
