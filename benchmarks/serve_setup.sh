# Sourced by the serving benchmarks (serve_vs_mlx_lm_gpu.sh, ranks_scaling.sh): the model folder
# linked into a scratch model dir, the output folder, the server's cleanup and a readiness wait.
# Expects $1 (the MLX model folder); sets FOLDER, NAME, PY, WORK, OUT_DIR and SERVER.
FOLDER=$(realpath "$1")
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
OUT_DIR=${OUT_DIR:-$WORK}
NAME=$(basename "$FOLDER")
mkdir -p "$WORK/models" "$OUT_DIR"
ln -s "$FOLDER" "$WORK/models/$NAME"
SERVER=""
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

wait_ready() {  # url [seconds]: a large model's load (or several ranks') takes minutes
  for _ in $(seq "${2:-600}"); do
    curl -sf "$1" >/dev/null && return 0
    kill -0 "$SERVER" 2>/dev/null || { echo "server exited; see its log"; return 1; }
    sleep 1
  done
  echo "no answer from $1"
  return 1
}
