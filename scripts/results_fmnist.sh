#!/usr/bin/env bash
# The README results table: every shipped Fashion-MNIST generator, sampled with the settings its sweep chose
# (results/fmnist/sweep/<sweep>.json, scripts/sweep_sampling.py; scored there against a held-out test
# reference), scored with two sampling seeds (0 and 1) against 5000 train images (Inception FID/KID, N
# samples, real-vs-real floor at N from the test split) and the shipped classifier, then timed (`argen bench`,
# batch 1 and 16).
# Writes results/fmnist/<row>.eval.json (seed 0), <row>.seed1.eval.json and <row>.bench.json;
# scripts/results_table.py makes the table and plot.
#   bash scripts/results_fmnist.sh [device] [rows...]     (N=1000 by default; OMP_NUM_THREADS as you wish)
# ONLY=eval or ONLY=bench runs one half (the README's timings: ONLY=bench on an idle machine, one thread);
# SEEDS="0" scores one seed. An existing eval report is kept (delete it to rerun).
# The actvar row is the shipped actvar_fmnist (`bash scripts/train_fmnist.sh d`); the table's actvar_short row
# (the same budget distilled 4x shorter, shipped before; git 74e7a9c) is not a shipped asset and not re-run here.
# Likewise actvar_tokens (`bash scripts/train_fmnist.sh e`) and actvar_tokens_short (git d361845).
# The earlier models' reports (first tokenizer pair) are in results/fmnist/earlier/.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=${1:-cpu}
shift || true
A=${ARGEN:-.venv/bin/argen}
PY=${PYTHON:-.venv/bin/python}
N=${N:-1000}
S=argen/assets
R=results/fmnist
mkdir -p $R
chosen() {  # the sampler flags a sweep chose (none when the sweep has not run)
  [ -f "$R/sweep/$1.json" ] || return 0
  $PY -c "import json,sys; print(json.load(open(sys.argv[1]))['flags'])" "$R/sweep/$1.json"
}
row() {  # row <name> <model asset> <tokenizer asset> <sweep> [sampler options]
  local name=$1 model=$S/$2.safetensors tok=$S/$3.safetensors sweep=$4
  shift 4
  if [ -n "${ROWS:-}" ] && [[ " $ROWS " != *" $name "* ]]; then return; fi
  # shellcheck disable=SC2046
  set -- "$@" $(chosen "$sweep")
  if [ "${ONLY:-}" != bench ]; then
    for seed in ${SEEDS:-0 1}; do
      local out=$R/$name.eval.json
      [ "$seed" = 0 ] || out=$R/$name.seed$seed.eval.json
      [ -f "$out" ] || $A eval --model "$model" --tokenizer "$tok" --n "$N" --device "$DEV" --seed "$seed" "$@" \
        --set ref_n=5000 --set out="$out"
    done
  fi
  [ "${ONLY:-}" = eval ] || $A bench --model "$model" --tokenizer "$tok" --device "$DEV" "$@" \
    --batch-sizes 1,16 --repeats 3 --name "$name" --out $R/$name.bench.json
}
ROWS="$*"
row raster raster_fmnist vq2_fmnist raster
row ear31 ear_fmnist vq2_fmnist ear31
# any-schedule EAR samples with the settings chosen for EAR-31 (same network, fine-tuned; one sweep less)
row ear_any31 ear_any_fmnist vq2_fmnist ear31
row ear_any16 ear_any_fmnist vq2_fmnist ear31 --schedule 16
row ear_any8 ear_any_fmnist vq2_fmnist ear31 --schedule 8
row var var_fmnist msvq2_fmnist var
# the ActVARs sample with their teacher's chosen settings (distillation fits them to the teacher)
row actvar actvar_fmnist msvq2_fmnist var
row actvar_fast actvar_fast_fmnist msvq2_fmnist var
row actvar_experts actvar_experts_fmnist msvq2_fmnist var
row actvar_tokens actvar_tokens_fmnist msvq2_fmnist var
