"""Copy a trained argen model file into argen/assets/ in bf16 (the shipped form).

python scripts/export_asset.py runs/vq_fmnist/model.safetensors vq_fmnist
"""

import sys
from pathlib import Path

import torch

from argen.models.checkpoints import load_model, save_model

src, name = sys.argv[1], sys.argv[2]
assets = Path(__file__).resolve().parents[1] / "argen" / "assets"
path = save_model(load_model(src), assets / name, torch.bfloat16)
print(f"{path} ({path.stat().st_size / 1e6:.2f} MB)")
