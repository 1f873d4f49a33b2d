"""Model folders in the Hugging Face layout: `config.json` + `model.safetensors` + a short model card.

    save_pretrained(model, "ear_fmnist/")        # any registered kind: vq, msvq, gpt, var, actvar, classifier
    model = from_pretrained("ear_fmnist/")       # a folder, a model file, a shipped name or a Hub repo id

`config.json` holds what an argen `NAME.json` holds ({"kind", "config", "argen_version", "trained_with"}) and
the weights are written by the same code as `save_model`, so `load_model` and every CLI flag that takes a
model file also take such a folder. A Hub repo id (`owner/name`) is fetched with `huggingface_hub` when it is
installed; argen never needs it (local folders work offline).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from argen.io import atomic_write_text
from argen.models.checkpoints import (
    FOLDER_CONFIG,
    FOLDER_WEIGHTS,
    CheckpointError,
    load_model,
    model_files,
    resolve_model_path,
    write_model_files,
)

CARD = "README.md"
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_CARD_TAGS = {
    "vq": "image-tokenizer",
    "msvq": "image-tokenizer",
    "gpt": "image-generation",
    "var": "image-generation",
    "actvar": "image-generation",
    "classifier": "image-classification",
}


def save_pretrained(
    model: nn.Module,
    folder: str | Path,
    dtype: torch.dtype | None = None,
    trained_with: dict[str, Any] | None = None,
    description: str = "",
    numbers: dict[str, Any] | None = None,
    sampling: dict[str, Any] | None = None,
) -> Path:
    """Write `folder/` with `model.safetensors`, `config.json` and a model card `README.md`.

    Args:
        model: a registered argen model (it has `.kind` and `.config`).
        folder: created if missing; a file there is an error.
        dtype: store the weights in this dtype (e.g. torch.bfloat16); None keeps theirs.
        trained_with: the training record kept in config.json (tokenizer fingerprint, objective), as
            `read_meta(file)["trained_with"]` gives it.
        description: how the model was trained, for the card (a paragraph of Markdown).
        numbers: measured results for the card, name -> value (e.g. {"FID (N=1000)": 80.3}).
        sampling: the generator's own sampling defaults (see `argen.model_io.save_model`).

    Returns:
        The folder.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(
            f"{folder} is a file; save_pretrained writes a folder (give a new or existing folder)"
        )
    meta = write_model_files(
        model, folder / FOLDER_WEIGHTS, folder / FOLDER_CONFIG, dtype, trained_with, sampling
    )
    params = sum(p.numel() for p in model.parameters())
    atomic_write_text(folder / CARD, model_card(meta, params, folder.name, description, numbers))
    return folder


def from_pretrained(
    name_or_path: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    expect: tuple[str, ...] | None = None,
    revision: str | None = None,
) -> nn.Module:
    """Load a model folder, a model file, a shipped model's name, or a Hugging Face Hub repo id.

    A local path wins over a repo id of the same spelling. The Hub needs `huggingface_hub` (and the
    network); only `config.json`, `model.safetensors` and the card are fetched.

    Args:
        name_or_path: folder, `NAME.safetensors`, shipped name (`ear_fmnist`) or `owner/name` on the Hub.
        device, dtype: where and in which dtype the model is placed (eval mode).
        expect: the kinds the caller can use; another kind is a CheckpointError.
        revision: Hub branch, tag or commit (Hub only).
    """
    local = resolve_model_path(name_or_path)
    if not local.exists() and not model_files(local)[0].exists():
        if _REPO_ID.fullmatch(str(name_or_path)):
            local = _download(str(name_or_path), revision)
        else:
            raise CheckpointError(
                f"{name_or_path} not found: give a model folder (config.json + model.safetensors), a model "
                "file, a shipped model's name or a Hugging Face Hub repo id (owner/name)"
            )
    elif revision is not None:
        raise ValueError(f"revision applies to Hub repo ids; {name_or_path} is a local model")
    return load_model(local, device, dtype, expect)


def _download(repo_id: str, revision: str | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise CheckpointError(
            f"{repo_id} is not a local model folder or file; to fetch it from the Hugging Face Hub "
            "`pip install huggingface_hub` (or download the folder and give its path)"
        ) from e
    try:
        path = snapshot_download(
            repo_id, revision=revision, allow_patterns=[FOLDER_CONFIG, FOLDER_WEIGHTS, CARD]
        )
    except Exception as e:  # the hub raises many types: offline, unknown repo, gated, bad revision
        raise CheckpointError(
            f"could not fetch {repo_id} from the Hugging Face Hub ({type(e).__name__}: {e}); check the repo "
            "id and the network, or give a local folder"
        ) from e
    return Path(path)


def model_card(
    meta: dict[str, Any], params: int, name: str, description: str = "", numbers: dict[str, Any] | None = None
) -> str:
    """The model card (Markdown with Hub front matter) of a model with config `meta`."""
    kind = meta["kind"]
    lines = [
        "---",
        "library_name: argen",
        f"tags: [argen, {kind}, {_CARD_TAGS.get(kind, 'image')}]",
        "---",
        "",
        f"# {name}",
        "",
        f"An argen `{kind}` model, {params / 1e6:.2f}M parameters (argen {meta.get('argen_version', '?')}).",
        "",
    ]
    if description:
        lines += [description.strip(), ""]
    trained_with = meta.get("trained_with") or {}
    if trained_with:
        lines += ["## Training record", ""]
        lines += [f"- {key}: `{_flat(value)}`" for key, value in sorted(trained_with.items())]
        lines.append("")
    if meta.get("sampling"):
        lines += ["## Sampling defaults", "", "Used where a caller does not set them:", ""]
        lines += [f"- {key}: `{value}`" for key, value in sorted(meta["sampling"].items())]
        lines.append("")
    if numbers:
        lines += ["## Measured", "", "| | |", "|---|---|"]
        lines += [f"| {key} | {_fmt(value)} |" for key, value in numbers.items()]
        lines.append("")
    lines += [
        "## Use",
        "",
        "```python",
        "from argen.models.pretrained import from_pretrained",
        "",
        f'model = from_pretrained("{name}")  # this folder (or its Hub repo id)',
        "```",
        "",
        f"The argen CLI takes the folder wherever it takes a model file (`--model {name}`).",
        "",
        "## Config",
        "",
        "```json",
        _flat(meta["config"]),
        "```",
        "",
    ]
    return "\n".join(lines)


def _flat(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
