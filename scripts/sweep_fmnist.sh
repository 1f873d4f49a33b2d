#!/usr/bin/env bash
# Sampling settings of the shipped Fashion-MNIST generators: one small sweep per model (N=250 per point,
# sampling seed 100, scored against 1000 held-out test images; see scripts/sweep_sampling.py). The chosen
# settings land in results/fmnist/sweep/<row>.json, which scripts/results_fmnist.sh reads.
#   bash scripts/sweep_fmnist.sh [rows...]      (raster ear31 var var_wide; default all)
# Only the CFG scale is swept (three values; the 2-core CPU budget of the retraining session); temperature,
# top-k and top-p stay at each family's defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
S=argen/assets
ROWS=" ${*:-raster ear31 var var_wide} "
sweep() {  # sweep <row> <model asset> <tokenizer asset> <grid...>
  local name=$1 model=$S/$2.safetensors tok=$S/$3.safetensors
  shift 3
  [[ "$ROWS" == *" $name "* ]] || return 0
  local grid=()
  for g in "$@"; do grid+=(--grid "$g"); done
  $PY scripts/sweep_sampling.py --name "$name" --model "$model" --tokenizer "$tok" --n "${N:-250}" "${grid[@]}"
}
sweep raster raster_fmnist vq2_fmnist cfg=1.5,2.5,3.5
sweep ear31 ear_fmnist vq2_fmnist cfg=1.5,2.5,3.5
sweep var var_fmnist msvq2_fmnist cfg=1.5,2.5,3.5
# var's choice sat at its grid's edge: the wider grid checks it (it chose 3.5 again)
sweep var_wide var_fmnist msvq2_fmnist cfg=1.5,2.5,3.5,4.5,5.5
