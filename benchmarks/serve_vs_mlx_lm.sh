#!/usr/bin/env bash
# impetus serve vs mlx_lm.server on the same model, streaming clients at several concurrencies.
#
#   bash benchmarks/serve_vs_mlx_lm.sh [MODEL] [TOKENS]
#
# Two mlx_lm.server runs: the model folder as it is stored (what a user of mlx_lm.server gets;
# 4-bit for the embedded model, slow on Linux CPU), and a float32 copy with the same OpenBLAS
# preloaded (the same weights, dtype and BLAS as impetus: a comparison of the serving machinery).
# Prints `impetus bench serve` tables; `impetus bench history` keeps every run.
set -euo pipefail
MODEL=${1:-smollm2-135m}
TOKENS=${2:-32}
BIN=$(dirname "$(command -v python)")
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

impetus models pull "$MODEL" >/dev/null  # the MLX folder (the embedded GGUF is converted once)
FOLDER=$(impetus models info "$MODEL" --json | python -c 'import json,sys; print(json.load(sys.stdin)["path"])')
python -m mlx_lm.convert --hf-path "$FOLDER" --mlx-path "$WORK/f32" -d --dtype float32 >/dev/null
# the OpenBLAS impetus loads, and the kernels it picks (OPENBLAS_CORETYPE, set by impetus when the
# library's own pick is a generic fallback): mlx_lm.server's float32 copy gets both
read -r OPENBLAS CORETYPE < <(python -c 'import os; from impetus.engine.blas import load_optimized_blas as l; i=l(); print(i.path if i else "-", os.environ.get("OPENBLAS_CORETYPE", "-"))')
if [ "$OPENBLAS" = - ]; then OPENBLAS=; fi
echo "OpenBLAS for both: ${OPENBLAS:-none}, OPENBLAS_CORETYPE=$CORETYPE (-: as the library picks)"
if [ "$CORETYPE" = - ]; then CORETYPE=; fi

wait_ready() { for _ in $(seq 300); do curl -sf "$1" >/dev/null && return 0; sleep 1; done; echo "no answer from $1"; exit 1; }

impetus serve --host 127.0.0.1 --port 8101 --no-auth --model "$MODEL" 2>"$WORK/impetus.log" &
python -m mlx_lm server --host 127.0.0.1 --port 8102 --model "$FOLDER" 2>"$WORK/mlx4.log" &
env LD_PRELOAD="$OPENBLAS" ${CORETYPE:+OPENBLAS_CORETYPE=$CORETYPE} python -m mlx_lm server --host 127.0.0.1 --port 8103 --model "$WORK/f32" 2>"$WORK/mlx32.log" &
wait_ready http://127.0.0.1:8101/ready
wait_ready http://127.0.0.1:8102/v1/models
wait_ready http://127.0.0.1:8103/v1/models

common=(--tokenizer "$MODEL" --prompt-tokens 64 --max-tokens "$TOKENS" --warmup 2 --quiet)
for level in "1,8 16" "32,128 128"; do
  set -- $level
  impetus bench serve --base-url http://127.0.0.1:8101/v1 --model "$MODEL" --label impetus \
    --concurrency "$1" --requests "$2" "${common[@]}"
  impetus bench serve --base-url http://127.0.0.1:8103/v1 --model "$WORK/f32" --label "mlx_lm.server float32+OpenBLAS" \
    --concurrency "$1" --requests "$2" "${common[@]}"
done
# the stored 4-bit weights on MLX's CPU quantized kernels: one stream only, it is slow
impetus bench serve --base-url http://127.0.0.1:8102/v1 --model "$FOLDER" --label "mlx_lm.server as stored (4-bit)" \
  --concurrency 1 --requests 4 "${common[@]}"
