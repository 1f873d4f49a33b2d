#!/usr/bin/env bash
# Confidence-adaptive EAR against the fixed schedules, same model (ear_any_fmnist), same seeds and protocol as
# the results table (N=1000, FID/KID against 5000 train images, seed 0): passes that really ran, FLOPs,
# sampling time and quality. Batch-1 latency from `argen bench` (adaptive decoding is a latency tool: each image
# runs its own schedule). Writes results/fmnist/adaptive/<row>.eval.json and <row>.bench.json.
#   OMP_NUM_THREADS=1 bash scripts/adaptive_fmnist.sh [device]
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=${1:-cpu}
A=${ARGEN:-.venv/bin/argen}
N=${N:-1000}
R=results/fmnist/adaptive
mkdir -p $R
row() {  # row <name> [sampler options]
  local name=$1
  shift
  $A eval --model ear_any_fmnist --tokenizer vq_fmnist --n "$N" --device "$DEV" "$@" --set out=$R/$name.eval.json
  $A bench --model ear_any_fmnist --tokenizer vq_fmnist --device "$DEV" "$@" --batch-sizes 1 --repeats 5 \
    --name "$name" --out $R/$name.bench.json
}
row fixed31
row fixed16 --schedule 16
row fixed12 --schedule 12
row fixed8 --schedule 8
for t in 0.3 0.5 0.7 0.9; do row "adaptive$t" --adaptive "$t"; done
