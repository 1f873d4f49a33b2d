#!/usr/bin/env bash
# The README results table: every shipped Fashion-MNIST generator, sampled with its own default settings
# (seed 0), scored against 5000 train images (Inception FID/KID, N samples, real-vs-real floor at N from the
# test split) and the shipped classifier, then timed (`argen bench`, batch 1 and 16).
# Writes results/fmnist/<row>.eval.json and <row>.bench.json; scripts/results_table.py makes the table and plot.
#   bash scripts/results_fmnist.sh [device] [rows...]     (N=1000 by default; OMP_NUM_THREADS as you wish)
# ONLY=eval or ONLY=bench runs one half (the README's timings: ONLY=bench on an idle machine, one thread).
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=${1:-cpu}
shift || true
A=${ARGEN:-.venv/bin/argen}
N=${N:-1000}
S=argen/assets
R=results/fmnist
mkdir -p $R
row() {  # row <name> <model asset> <tokenizer asset> [sampler options]
  local name=$1 model=$S/$2.safetensors tok=$S/$3.safetensors
  shift 3
  if [ -n "${ROWS:-}" ] && [[ " $ROWS " != *" $name "* ]]; then return; fi
  [ "${ONLY:-}" = bench ] || $A eval --model "$model" --tokenizer "$tok" --n "$N" --device "$DEV" "$@" \
    --set ref_n=5000 --set out=$R/$name.eval.json
  [ "${ONLY:-}" = eval ] || $A bench --model "$model" --tokenizer "$tok" --device "$DEV" "$@" \
    --batch-sizes 1,16 --repeats 3 --name "$name" --out $R/$name.bench.json
}
ROWS="$*"
row raster raster_fmnist vq_fmnist
row ear31 ear_fmnist vq_fmnist
row ear_any31 ear_any_fmnist vq_fmnist
row ear_any16 ear_any_fmnist vq_fmnist --schedule 16
row ear_any8 ear_any_fmnist vq_fmnist --schedule 8
row var var_fmnist msvq_fmnist
row actvar actvar_fmnist msvq_fmnist
row actvar_fast actvar_fast_fmnist msvq_fmnist
row actvar_experts actvar_experts_fmnist msvq_fmnist
row actvar_tokens actvar_tokens_fmnist msvq_fmnist
