#!/usr/bin/env bash
# impetus serve vs mlx_lm.server on an accelerator, one server after the other on the same card.
#
#   bash benchmarks/serve_vs_mlx_lm_gpu.sh MODEL_FOLDER [LEVELS] [PROMPT_TOKENS] [MAX_TOKENS]
#
# MODEL_FOLDER is an MLX folder (benchmarks/make_random_model.py builds one of a real model's
# shape). Both servers load that folder; impetus serves its bf16 weights as stored (the CUDA
# serving dtype), mlx_lm.server as stored. Streaming chat clients (`impetus bench serve`) at each
# concurrency level of LEVELS ("1:8,8:32,32:64,128:256": streams:requests), then first-token time
# at one stream for prompts of 128, 512 and 2048 tokens. Every run is stored in the bench db
# (`impetus bench history`); `--json` results land in $OUT_DIR (default: a temporary folder) and
# the last lines print the side-by-side table. SIDES="impetus" runs one side only.
set -euo pipefail
LEVELS=${2:-1:8,8:32,32:64,128:256}
PROMPT=${3:-374}
TOKENS=${4:-128}
source "$(dirname "$0")/serve_setup.sh"

bench() {  # label base-url model-id
  local label=$1 url=$2 model=$3 spec
  for spec in ${LEVELS//,/ }; do
    "$PY" -m impetus.cli bench serve --base-url "$url" --model "$model" --label "$label" \
      --tokenizer "$FOLDER" --concurrency "${spec%%:*}" --requests "${spec##*:}" \
      --prompt-tokens "$PROMPT" --max-tokens "$TOKENS" --warmup 2 --timeout 600 --quiet --json \
      >"$OUT_DIR/$label-c${spec%%:*}.json"
  done
  "$PY" -m impetus.cli bench serve --base-url "$url" --model "$model" --label "$label" \
    --tokenizer "$FOLDER" --concurrency 1 --requests 6 --prompt-tokens 128,512,2048 \
    --max-tokens 8 --warmup 1 --timeout 600 --quiet --json >"$OUT_DIR/$label-ttft.json"
}

SIDES=${SIDES:-impetus mlx_lm}
export IMPETUS_HOME=$WORK/home
if [[ " $SIDES " == *" impetus "* ]]; then
"$PY" -m impetus.cli serve --model-dir "$WORK/models" --model "$NAME" --host 127.0.0.1 --port 8101 \
  --no-auth --keep-alive -1 2>"$OUT_DIR/impetus-serve.log" &
SERVER=$!
wait_ready http://127.0.0.1:8101/ready
bench impetus http://127.0.0.1:8101/v1 "$NAME"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
fi

if [[ " $SIDES " == *" mlx_lm "* ]]; then
"$PY" -m mlx_lm.server --model "$FOLDER" --host 127.0.0.1 --port 8102 2>"$OUT_DIR/mlx_lm-server.log" &
SERVER=$!
wait_ready http://127.0.0.1:8102/v1/models
bench mlx_lm http://127.0.0.1:8102/v1 "$FOLDER"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
fi
SERVER=""

"$PY" "$(dirname "$0")/serve_table.py" "$OUT_DIR"
