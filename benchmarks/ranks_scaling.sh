#!/usr/bin/env bash
# One model across 1, 2, 4 engine ranks (`impetus serve --ranks N`, tensor parallel over MLX's
# NCCL backend, one GPU a rank), on a machine with at least as many GPUs as the largest count.
#
#   bash benchmarks/ranks_scaling.sh MODEL_FOLDER [RANKS] [LEVELS] [PROMPT_TOKENS] [MAX_TOKENS]
#
# MODEL_FOLDER is an MLX folder (benchmarks/make_random_model.py --preset llama3-8b builds one of
# Llama-3-8B's shape; --preset llama3-70b one that does not fit one 80 GB card: run it with
# RANKS="2 4" or "4 8"). RANKS defaults to "1 2 4"; LEVELS ("1:8,64:128", streams:requests) are
# the streaming chat clients of `impetus bench serve` at each count. Each server is stopped
# before the next starts. `--json` results land in $OUT_DIR (default: a temporary folder), every
# run is also in the bench db (`impetus bench history`), and the last lines print the Markdown
# table for docs/benchmarks.md: output tokens/s per stream count and the scaling efficiency
# (tokens/s at N ranks / (N x tokens/s at 1 rank)), with the card and the date.
set -euo pipefail
RANKS=${2:-1 2 4}
LEVELS=${3:-1:8,64:128}
PROMPT=${4:-374}
TOKENS=${5:-128}
source "$(dirname "$0")/serve_setup.sh"

export IMPETUS_HOME=$WORK/home
for n in $RANKS; do
  "$PY" -m impetus.cli serve --model-dir "$WORK/models" --model "$NAME" --ranks "$n" \
    --host 127.0.0.1 --port 8101 --no-auth --keep-alive -1 2>"$OUT_DIR/ranks$n-serve.log" &
  SERVER=$!
  wait_ready http://127.0.0.1:8101/ready 1800
  # the same greedy continuation at every rank count (compared at the end)
  curl -sf http://127.0.0.1:8101/v1/completions -H 'Content-Type: application/json' \
    -d "{\"model\": \"$NAME\", \"prompt\": \"The quick brown fox\", \"max_tokens\": 32, \"temperature\": 0, \"ignore_eos\": true}" \
    >"$OUT_DIR/ranks$n-greedy.json" || echo "greedy probe failed at $n ranks"
  for spec in ${LEVELS//,/ }; do
    "$PY" -m impetus.cli bench serve --base-url http://127.0.0.1:8101/v1 --model "$NAME" \
      --label "ranks$n" --tokenizer "$FOLDER" --concurrency "${spec%%:*}" \
      --requests "${spec##*:}" --prompt-tokens "$PROMPT" --max-tokens "$TOKENS" --warmup 2 \
      --timeout 1200 --quiet --json >"$OUT_DIR/ranks$n-c${spec%%:*}.json"
  done
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
  SERVER=""
done

CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
echo "$NAME, ${CARD:-unknown card}, $(date -u +%Y-%m-%d), prompt $PROMPT tokens, $TOKENS out"
"$PY" - "$OUT_DIR" <<'PY'
import json, re, sys
from pathlib import Path

folder = Path(sys.argv[1])
rows = {}
for f in folder.glob("ranks*-c*.json"):
    m = re.match(r"ranks(\d+)-c(\d+)\.json$", f.name)
    runs = json.loads(f.read_text())
    runs = runs if isinstance(runs, list) else [runs]
    p = runs[0]["profiles"][0]
    rows[(int(m.group(1)), int(m.group(2)))] = (p["output_throughput"], p["failed"])
texts = {}
for f in sorted(folder.glob("ranks*-greedy.json")):
    n = int(re.match(r"ranks(\d+)-greedy", f.name).group(1))
    texts[n] = json.loads(f.read_text())["choices"][0]["text"]
if texts:
    same = len(set(texts.values())) == 1
    print(f"greedy 32 tokens at ranks {sorted(texts)}: {'the same text' if same else 'texts differ'}")
    if not same:
        for n, t in sorted(texts.items()):
            print(f"  {n} ranks: {t!r}")
print("| ranks | streams | output tok/s | failed | scaling efficiency |")
print("|---|---|---|---|---|")
for (n, c), (tps, failed) in sorted(rows.items()):
    base = rows.get((1, c))
    eff = f"{tps / (n * base[0]):.0%}" if base and base[0] else "–"
    print(f"| {n} | {c} | {tps:.1f} | {failed} | {eff} |")
PY
