#!/usr/bin/env bash
# Sampling speed of raster vs EAR vs VAR vs ActVAR at comparable backbone sizes on this machine, random
# weights (speed does not depend on the weights), tokenizer decoding included. Writes results/<device>/*.json.
#   bash scripts/bench_cpu.sh [device] [batch sizes]
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=${1:-cpu}
BS=${2:-1,16}
A=${ARGEN:-.venv/bin/argen}
M=runs/bench
R=results/$DEV
mkdir -p $M $R
VQ=vq2_fmnist
$A init gpt --preset fmnist_raster_s --out $M/raster
$A init gpt --preset fmnist_s --out $M/ear
$A init msvq --preset fmnist --out $M/msvq
$A init var --preset fmnist --out $M/var
$A distill --set teacher=$M/var.safetensors --set source=random --set stage1_steps=0 --set stage2_steps=0 \
    --set budget=fmnist --set out_dir=$M/actvar_run --set device=$DEV
run() { $A bench --device "$DEV" --batch-sizes "$BS" --repeats 3 "$@"; }
run --model $M/raster.safetensors --tokenizer $VQ --name "raster 256" --out $R/raster.json
run --model $M/ear.safetensors --tokenizer $VQ --name "EAR sides (31)" --out $R/ear31.json
run --model $M/ear.safetensors --tokenizer $VQ --schedule 16 --name "EAR 16" --out $R/ear16.json
run --model $M/ear.safetensors --tokenizer $VQ --schedule 8 --name "EAR 8" --out $R/ear8.json
run --model $M/var.safetensors --tokenizer $M/msvq.safetensors --name "VAR" --out $R/var.json
run --model $M/var.safetensors --tokenizer $M/msvq.safetensors --sampler reference --name "VAR reference" \
    --out $R/var_reference.json
run --model $M/actvar_run/actvar.safetensors --tokenizer $M/msvq.safetensors --name "ActVAR" --out $R/actvar.json
# token sparsity only (70% of tokens on the last three scales, every expert): the budget that saves CPU time
$A distill --set teacher=$M/var.safetensors --set source=random --set stage1_steps=0 --set stage2_steps=0 \
    --set budget=fmnist_tokens --set out_dir=$M/actvar_tokens_run --set device=$DEV
run --model $M/actvar_tokens_run/actvar.safetensors --tokenizer $M/msvq.safetensors --name "ActVAR tokens only" \
    --out $R/actvar_tokens.json
