#!/usr/bin/env bash
# impetus serve vs llama.cpp's own server on the same GGUF file, streaming clients at several
# concurrencies, one server after the other (they would share the CPU's cores otherwise).
#
#   bash benchmarks/serve_vs_llama_cpp.sh LLAMA_SERVER [TOKENS] [LEVELS]
#
# LLAMA_SERVER: a `llama-server` binary built for this machine (docs/benchmarks.md says how).
# TOKENS: generated tokens per request (default 64, `ignore_eos`). LEVELS: "CONCURRENCY:REQUESTS"
# pairs (default "1:8 32:128 128:256"). SLOTS (environment, default 32): llama-server's parallel
# slots (-np); its context (-c) is SLOTS x 512 tokens, enough for a 64-token prompt and TOKENS.
# The model is the embedded default, SmolLM2-135M-Instruct as Q4_1 GGUF: llama.cpp runs its
# quantized kernels, impetus converts the file and serves it as float32 on the CPU (its pick:
# MLX's 4-bit CPU kernels are slower, docs/benchmarks.md). Prints `impetus bench serve` tables.
set -euo pipefail
LLAMA=${1:?usage: serve_vs_llama_cpp.sh LLAMA_SERVER [TOKENS] [LEVELS]}
TOKENS=${2:-64}
LEVELS=${3:-"1:8 32:128 128:256"}
SLOTS=${SLOTS:-32}
MODEL=smollm2-135m
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

GGUF=$(impetus models info "$MODEL" --json | python -c 'import json,sys; print(json.load(sys.stdin)["source_path"])')
echo "model file: $GGUF"
"$LLAMA" --version 2>&1 | head -2 || true
nproc | sed 's/^/cores: /'

wait_ready() { for _ in $(seq 300); do curl -sf "$1" >/dev/null && return 0; sleep 1; done; echo "no answer from $1"; exit 1; }

run_levels() {  # BASE_URL MODEL_ID LABEL
  for level in $LEVELS; do
    impetus bench serve --base-url "$1" --model "$2" --label "$3" --tokenizer "$MODEL" \
      --concurrency "${level%%:*}" --requests "${level##*:}" \
      --prompt-tokens 64 --max-tokens "$TOKENS" --warmup 2 --quiet
  done
}

impetus serve --host 127.0.0.1 --port 8111 --no-auth --model "$MODEL" 2>"$WORK/impetus.log" &
PID=$!
wait_ready http://127.0.0.1:8111/ready
run_levels http://127.0.0.1:8111/v1 "$MODEL" impetus
kill "$PID"; wait "$PID" 2>/dev/null || true

"$LLAMA" --host 127.0.0.1 --port 8112 -m "$GGUF" -np "$SLOTS" -c $((SLOTS * 512)) \
  -t "$(nproc)" --jinja 2>"$WORK/llama.log" &
PID=$!
wait_ready http://127.0.0.1:8112/health
run_levels http://127.0.0.1:8112/v1 "$MODEL" "llama.cpp server ($SLOTS slots)"
kill "$PID"; wait "$PID" 2>/dev/null || true
