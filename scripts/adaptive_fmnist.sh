#!/usr/bin/env bash
# Confidence-adaptive EAR against the fixed schedules, same model (ear_any_fmnist), same seeds and protocol as
# the results table (N=1000, FID/KID against 5000 train images, seed 0): passes and FLOPs that really ran,
# sampling time and quality. Rows whose JSON exists are kept (delete it to re-run). Batch-1 latency, the
# number adaptive decoding is for, is measured side by side by scripts/adaptive_latency.py.
# Writes results/fmnist/adaptive/<row>.eval.json.
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
  [ -f $R/$name.eval.json ] && return
  $A eval --model ear_any_fmnist --n "$N" --device "$DEV" "$@" --set out=$R/$name.eval.json
}
row fixed31
row adaptive0.5 --adaptive 0.5
row fixed12 --schedule 12
row fixed16 --schedule 16
row adaptive0.7 --adaptive 0.7
row fixed8 --schedule 8
