"""Copy a trained argen model into argen/assets/NAME/ (a model folder, bf16: the shipped form), keeping its
training record; `scripts/export_pretrained.py NAME` then writes the full model card.

python scripts/export_asset.py runs/vq2_fmnist/model.safetensors vq2_fmnist
python scripts/export_asset.py runs/ear2_fmnist/model.safetensors ear_fmnist \
    --sampling results/fmnist/sweep/ear31.json

--sampling stores the settings a sweep chose (scripts/sweep_sampling.py) as the model's own sampling
defaults.
"""

import argparse
import json
from pathlib import Path

import torch

from argen.models.checkpoints import load_model, read_meta
from argen.models.pretrained import save_pretrained


def sweep_sampling(path: str | None) -> dict | None:
    """The settings a sweep chose (scripts/sweep_sampling.py), as SamplingConfig fields."""
    return None if path is None else json.loads(Path(path).read_text())["sampling"]


parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("src", help="trained model file")
parser.add_argument("name", help="asset name (argen/assets/NAME/)")
parser.add_argument("--sampling", help="sweep JSON whose chosen settings become the model's defaults")
args = parser.parse_args()
assets = Path(__file__).resolve().parents[1] / "argen" / "assets"
meta = read_meta(args.src)
sampling = sweep_sampling(args.sampling) or meta.get("sampling")
folder = save_pretrained(
    load_model(args.src), assets / args.name, torch.bfloat16, meta.get("trained_with"), sampling=sampling
)
print(
    f"{folder} ({(folder / 'model.safetensors').stat().st_size / 1e6:.2f} MB), sampling defaults {sampling}"
)
