#!/usr/bin/env bash
# The exact commands of the shipped Fashion-MNIST generators (trained on vq2_fmnist / msvq2_fmnist codes).
# raster_fmnist, ear_fmnist and ear_any_fmnist (lanes f and g) follow the paper's protocol: one 4 x 128 backbone,
# one recipe, 60,000 training images each; any-schedule EAR is EAR's 36k-image state trained 24k images more on
# random partitions; raster + adaLN (lane g) is the ablation beside them (not shipped).
# VAR (lane a, 40,000 images) and the ActVARs distilled from it at the budgets of the earlier ones (a, c, d, e).
# Two lanes, one thread each, for a 2-core machine:   bash scripts/train_fmnist.sh f & bash scripts/train_fmnist.sh g
# VAR and the main ActVAR:  bash scripts/train_fmnist.sh a; the other ActVAR budgets (need lane a's VAR): c
# and the main budget distilled longer:  bash scripts/train_fmnist.sh d   (the tokens-only budget: e)
# A finished step (its model file exists) is skipped; an interrupted one resumes from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
A=${ARGEN:-.venv/bin/argen}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p logs
step() {  # step <exported model file> <command...>
  local out=$1
  shift
  if [ -f "$out" ]; then echo "done: $out"; return; fi
  echo "$(date +%T) start: $*"
  "$@" > "logs/$(basename "$(dirname "$out")").log" 2>&1
}
case "${1:-}" in
  a)
    step runs/var2_fmnist/model.safetensors $A train var --config configs/var2_fmnist.json
    step runs/actvar2_fmnist/actvar.safetensors $A distill --config configs/actvar2_fmnist.json
    ;;
  c)
    step runs/actvar2_fast_fmnist/actvar.safetensors $A distill --config configs/actvar2_fast_fmnist.json
    step runs/actvar2_tokens_fmnist/actvar.safetensors $A distill --config configs/actvar2_tokens_fmnist.json
    step runs/actvar2_experts_fmnist/actvar.safetensors $A distill --config configs/actvar2_experts_fmnist.json
    ;;
  d)  # the main budget distilled 4x longer (stage 2: 600 steps x 16 instead of 150 x 16)
    step runs/actvar2_long_fmnist/actvar.safetensors $A distill --config configs/actvar2_long_fmnist.json
    ;;
  e)  # the CPU (tokens-only) budget distilled 4x longer, like d
    step runs/actvar2_tokens_long_fmnist/actvar.safetensors $A distill --config configs/actvar2_tokens_long_fmnist.json
    ;;
  f)  # shipped EAR (ear_fmnist), then any-schedule EAR (ear_any_fmnist) forked at 36k images (+24k)
    step runs/ear3_fmnist/model.safetensors $A train gpt --config configs/ear3_fmnist.json
    step runs/ear_any3_fmnist/model.safetensors $A train gpt --config configs/ear_any3_fmnist.json
    ;;
  g)  # shipped raster (raster_fmnist), then raster + adaLN (the ablation), same 4 x 128 backbone
    step runs/raster3_fmnist/model.safetensors $A train gpt --config configs/raster3_fmnist.json
    step runs/raster_adaln3_fmnist/model.safetensors $A train gpt --config configs/raster_adaln3_fmnist.json
    ;;
  *) echo "usage: bash scripts/train_fmnist.sh a|c|d|e|f|g" >&2; exit 2 ;;
esac
