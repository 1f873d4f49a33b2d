"""Copy a trained argen model into argen/assets/NAME/ (a model folder, bf16: the shipped form), keeping its
training record; `scripts/export_pretrained.py NAME` then writes the full model card.

python scripts/export_asset.py runs/vq_fmnist/model.safetensors vq_fmnist
"""

import sys
from pathlib import Path

import torch

from argen.models.checkpoints import load_model, read_meta
from argen.models.pretrained import save_pretrained

src, name = sys.argv[1], sys.argv[2]
assets = Path(__file__).resolve().parents[1] / "argen" / "assets"
folder = save_pretrained(load_model(src), assets / name, torch.bfloat16, read_meta(src).get("trained_with"))
print(f"{folder} ({(folder / 'model.safetensors').stat().st_size / 1e6:.2f} MB)")
