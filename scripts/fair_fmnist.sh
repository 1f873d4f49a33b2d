#!/usr/bin/env bash
# EAR against raster by the paper's protocol (issue 27): one 4 x 128 backbone, the same optimiser, schedule
# and 60k training images for raster (LlamaGen), raster + adaLN, EAR-31 and any-schedule EAR (trained by
# `bash scripts/train_fmnist.sh f` and `g`). Every model samples at CFG 2.5 (what the earlier per-model sweeps
# chose for both raster and EAR), scored against 5000 train images with the shipped classifier.
#   curve:    checkpoints at 12k/24k/36k/48k images exported (`argen export`) and scored at N=250, seed 0
#             (any-schedule EAR: its fork point is EAR-31's 36k; its own 48k checkpoint)
#   final:    the 60k models at N=1000, seeds 0 and 1
#   ablation: any-schedule EAR at 256 (one token per pass), 16 and 8 passes, N=1000, seed 0 (31: see final)
#   bench:    seconds per image at batch 16 (`argen bench`)
# Writes results/fmnist/fair/*.json; `python scripts/results_table.py fair` makes the table and the plot.
#   bash scripts/fair_fmnist.sh [curve|final|ablation|bench ...]   (default: all four; reports kept;
#   a model still training is waited for; SEEDS="0" and STEPS="375 1125" run fewer final seeds and points)
set -euo pipefail
cd "$(dirname "$0")/.."
A=${ARGEN:-.venv/bin/argen}
R=results/fmnist/fair
E=runs/fair
mkdir -p $R $E
MODELS="raster3_fmnist raster_adaln3_fmnist ear3_fmnist ear_any3_fmnist"
score() {  # score <model file> <report> <n> <seed> [sampler flags]
  local model=$1 out=$2 n=$3 seed=$4
  shift 4
  [ -f "$out" ] || $A eval --model "$model" --n "$n" --device cpu --seed "$seed" --cfg 2.5 "$@" \
    --set ref_n=5000 --set out="$out"
}
wait_for() {  # a model still training: wait for its exported file
  while [ ! -f "$1" ]; do sleep 30; done
}
curve_points() {  # curve_points <run> <steps...>: checkpoints exported and scored at N=250
  local m=$1 step ck name
  shift
  for step in "$@"; do
    ck=runs/$m/checkpoints/step_0000$(printf %04d "$step")
    name=${m%3_fmnist}_$(((step + ${OFFSET:-0}) * 32 / 1000))k
    [ -f $E/$name.safetensors ] || $A export --checkpoint "$ck" --out $E/$name
    score $E/$name.safetensors $R/$name.n250.eval.json 250 0
  done
  score runs/$m/model.safetensors $R/${m%3_fmnist}_60k.n250.eval.json 250 0
}
curve() {
  for m in raster3_fmnist raster_adaln3_fmnist ear3_fmnist; do
    wait_for runs/$m/model.safetensors
    curve_points $m ${STEPS:-375 750 1125 1500}
  done
  # any-schedule EAR forked from EAR-31 at 36k (step 1125): its own step 375 is 48k images
  wait_for runs/ear_any3_fmnist/model.safetensors
  OFFSET=1125 curve_points ear_any3_fmnist 375
}
final() {
  for m in $MODELS; do
    wait_for runs/$m/model.safetensors
    for seed in ${SEEDS:-0 1}; do score runs/$m/model.safetensors $R/${m%3_fmnist}_60k.seed$seed.eval.json 1000 $seed; done
  done
}
ablation() {
  wait_for runs/ear_any3_fmnist/model.safetensors
  for passes in 256 16 8; do  # 31 passes is the model's own schedule: its `final` seed-0 report
    score runs/ear_any3_fmnist/model.safetensors $R/ear_any_${passes}passes.eval.json 1000 0 --schedule $passes
  done
}
bench() {
  for m in $MODELS; do
    $A bench --model runs/$m/model.safetensors --device cpu --cfg 2.5 --batch-sizes 16 --repeats 3 \
      --name ${m%3_fmnist} --out $R/${m%3_fmnist}.bench.json
  done
  for passes in 256 16 8; do
    $A bench --model runs/ear_any3_fmnist/model.safetensors --device cpu --cfg 2.5 --schedule $passes \
      --batch-sizes 16 --repeats 3 --name ear_any_$passes --out $R/ear_any_${passes}passes.bench.json
  done
}
for part in ${*:-curve final ablation bench}; do $part; done
