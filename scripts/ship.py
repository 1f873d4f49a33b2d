"""Release tools for the shipped models: `asset` copies a trained model into argen/assets/, `card` writes the
shipped models as model folders with their cards.

python scripts/ship.py asset runs/vq2_fmnist/model.safetensors vq2_fmnist
python scripts/ship.py asset runs/ear3_fmnist/model.safetensors ear_fmnist \
    --sampling results/fmnist/sweep/ear31.json
python scripts/ship.py card [--out out/pretrained] [NAME ...]     (default: every shipped model)

asset: the model goes to argen/assets/NAME/ as a model folder in bf16 (the shipped form), keeping its
training record; --sampling stores the settings a sweep chose (`python -m benchmarks sweep`) as the model's
own sampling defaults. `ship.py card NAME --out argen/assets` then writes its full card.

card: the weights keep their shipped dtype (the loaded model is bit for bit the shipped one); the card carries
the command and training config that made the model and the measured FID / class accuracy / CPU speed from
results/fmnist/ (`python -m benchmarks results`). Each folder loads with `from_pretrained(folder)` and is
accepted by every `--model` / `--tokenizer` flag; it can be uploaded to the Hugging Face Hub as is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from argen.models.checkpoints import ASSETS, load_model, model_files, read_meta, read_safetensors
from argen.models.pretrained import save_pretrained

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "fmnist"
# shipped name -> (training config, command, results name, setting the numbers were measured at)
PROVENANCE = {
    "vq2_fmnist": ("configs/vq2_fmnist.json", "argen train tokenizer", None, ""),
    "msvq2_fmnist": ("configs/msvq2_fmnist.json", "argen train msvq", None, ""),
    "raster_fmnist": ("configs/raster3_fmnist.json", "argen train gpt", "raster", "256 passes"),
    "ear_fmnist": ("configs/ear3_fmnist.json", "argen train gpt", "ear31", "31 passes"),
    "ear_any_fmnist": ("configs/ear_any3_fmnist.json", "argen train gpt", "ear_any31", "31 passes"),
    "var_fmnist": ("configs/var2_fmnist.json", "argen train var", "var", "10 scales"),
    "actvar_fmnist": ("configs/actvar2_long_fmnist.json", "argen distill", "actvar", "10 scales"),
    "actvar_fast_fmnist": ("configs/actvar2_fast_fmnist.json", "argen distill", "actvar_fast", "10 scales"),
    "actvar_tokens_fmnist": (
        "configs/actvar2_tokens_long_fmnist.json",
        "argen distill",
        "actvar_tokens",
        "10 scales",
    ),
    "actvar_experts_fmnist": (
        "configs/actvar2_experts_fmnist.json",
        "argen distill",
        "actvar_experts",
        "10 scales",
    ),
    "classifier_fmnist": (
        None,
        "python scripts/train_classifier.py --epochs 5 --out argen/assets/classifier_fmnist",
        None,
        "",
    ),
}
# the lane of scripts/train_fmnist.sh that ran a generator's command
LANES = {
    "var_fmnist": "a",
    "ear_fmnist": "f",
    "ear_any_fmnist": "f",
    "raster_fmnist": "g",
    "actvar_fast_fmnist": "c",
    "actvar_experts_fmnist": "c",
    "actvar_fmnist": "d",
    "actvar_tokens_fmnist": "e",
}


def ship_asset(src: str, name: str, sweep: str | None) -> None:
    """Copy the trained model `src` into argen/assets/NAME/ in bf16, with a sweep's choice as its defaults."""
    meta = read_meta(src)
    # the settings a sweep chose (benchmarks/sweep.py), as SamplingConfig fields
    sampling = (json.loads(Path(sweep).read_text())["sampling"] if sweep else None) or meta.get("sampling")
    folder = save_pretrained(
        load_model(src), ASSETS / name, torch.bfloat16, meta.get("trained_with"), sampling=sampling
    )
    size = (folder / "model.safetensors").stat().st_size / 1e6
    print(f"{folder} ({size:.2f} MB), sampling defaults {sampling}")


def describe(name: str) -> str:
    """The card's provenance line: the command that made the model, its config and its lane."""
    config, command, _, _ = PROVENANCE[name]
    text = "Trained by argen on Fashion-MNIST (32x32) on a 2-core CPU with `" + command
    text += "`" if config is None else f" --config {config}`"
    if name in LANES:
        text += f" (lane `{LANES[name]}` of `scripts/train_fmnist.sh`)"
    return text + " in the argen repository."


def numbers(result: str | None, setting: str) -> dict[str, object]:
    """FID/KID/class accuracy (N=1000 vs the train split) and CPU speed, where they were measured."""
    out: dict[str, object] = {}
    if result is None:
        return out
    ev, bench = RESULTS / f"{result}.eval.json", RESULTS / f"{result}.bench.json"
    if ev.is_file():
        report = json.loads(ev.read_text())
        out[f"FID, N={report['n']}, {setting}"] = report["fid"]
        out["KID"] = report["kid_mean"]
        out["class accuracy (argen classifier)"] = report["class_accuracy"]
        out["FID floor (real test images)"] = report["floor"]["fid"]
    if bench.is_file():
        report = json.loads(bench.read_text())
        out[f"images/s, {report['device']}, {report['threads']} thread"] = report["img_per_s"]
        out["latency, batch 1 (s)"] = report["latency_batch1_s"]
    return out


def ship_cards(names: list[str], out: str) -> None:
    """Write each shipped model `name` as the model folder `out/name` with its full card."""
    for name in names:
        if name not in PROVENANCE:
            raise SystemExit(f"unknown shipped model {name!r}; known: {sorted(PROVENANCE)}")
        _, _, result, setting = PROVENANCE[name]
        tensors = read_safetensors(model_files(ASSETS / name)[0]).values()
        stored = next(t.dtype for t in tensors if t.is_floating_point())  # ActVAR also holds int64 buffers
        meta = read_meta(ASSETS / name)
        folder = save_pretrained(
            load_model(ASSETS / name, dtype=stored),
            Path(out) / name,
            trained_with=meta.get("trained_with"),
            description=describe(name),
            numbers=numbers(result, setting),
            sampling=meta.get("sampling"),
        )
        print(folder)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("asset", help="copy a trained model into argen/assets/NAME/ (bf16 model folder)")
    p.add_argument("src", help="trained model file")
    p.add_argument("name", help="asset name (argen/assets/NAME/)")
    p.add_argument("--sampling", help="sweep JSON whose chosen settings become the model's defaults")
    p = sub.add_parser("card", help="write the shipped models as model folders with their cards")
    p.add_argument("names", nargs="*", default=sorted(PROVENANCE), help="shipped model names")
    p.add_argument("--out", default="out/pretrained", help="parent folder of the model folders")
    args = parser.parse_args()
    if args.command == "asset":
        ship_asset(args.src, args.name, args.sampling)
    else:
        ship_cards(args.names, args.out)


if __name__ == "__main__":
    main()
