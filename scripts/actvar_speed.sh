#!/usr/bin/env bash
# ActVAR time against its dense teacher, side by side (scripts/profile_actvar.py: process CPU time, one
# thread, calls alternating between the two models, medians). Writes results/cpu/actvar_speed/*.json.
#   bash scripts/actvar_speed.sh            # everything (~40 CPU minutes on the 2-core EPYC)
#   ONLY=fmnist bash scripts/actvar_speed.sh      (OUT=folder writes elsewhere)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/cpu/actvar_speed}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
run() {  # name, then profile_actvar.py arguments
  local name=$1; shift
  echo "== $name: $*" >&2
  "$PY" scripts/profile_actvar.py "$@" 2>/dev/null | grep -v '^USDT' > "$OUT/$name.json"
}
last3() { "$PY" -c "print([1.0] * 7 + [$1] * 3)"; }
if [ "${ONLY:-fmnist}" = fmnist ] || [ -z "${ONLY:-}" ]; then
  for b in 1 16 64; do run "fmnist_main_b$b" --sparse actvar_fmnist --batch "$b" --repeats 7; done
  run fmnist_cpu_budget_b16 --budget "{\"experts_k\": null, \"keep_ratio\": $(last3 0.65)}" --batch 16 --repeats 7 --no-profile
  run fmnist_tokens_b16 --sparse actvar_tokens_fmnist --batch 16 --repeats 7 --no-profile
  run fmnist_experts_b16 --sparse actvar_experts_fmnist --batch 16 --repeats 7 --no-profile
  run fmnist_fast_b16 --sparse actvar_fast_fmnist --batch 16 --repeats 7 --no-profile
  run fmnist_main_b16_bf16 --sparse actvar_fmnist --batch 16 --repeats 3 --dtype bf16 --no-profile
  for m in actvar_fmnist actvar_tokens_fmnist; do  # end to end from the CLI (VQVAE decoding included)
    echo "== bench --against: $m" >&2
    "${ARGEN:-.venv/bin/argen}" --threads 1 bench --model "$m" --against var_fmnist --batch-sizes 1,16 \
      --repeats 5 --out "$OUT/bench_against_$m.json" > /dev/null
  done
fi
if [ "${ONLY:-d16}" = d16 ] || [ -z "${ONLY:-}" ]; then
  run d16_b1 --size d16 --batch 1 --repeats 3
  run d16_b4 --size d16 --batch 4 --repeats 5 --no-profile
  run d16_b16 --size d16 --batch 16 --repeats 3 --no-profile
fi
