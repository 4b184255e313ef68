#!/usr/bin/env bash
# The long form of tests/reliability/test_fuzz.py: schemathesis over every operation of a real
# `impetus serve`'s openapi.json with random seeds and EXAMPLES requests per operation (default
# 300). Every operation: OpenAI's, Anthropic's, the Responses API's, Ollama's, admin and ops.
# Prints the requests tried (per protocol), the statuses seen, the 5xx count and the slowest
# operations; fails on any 5xx, schema violation or error not in its protocol's own shape.
# Record the result in docs/reliability.md (command, date, machine).
#
#   benchmarks/fuzz.sh [EXAMPLES]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTEST="${PYTEST:-.venv/bin/pytest}"
IMPETUS_FUZZ_EXAMPLES="${1:-300}" IMPETUS_FUZZ_RANDOM=1 \
  "$PYTEST" tests/reliability/test_fuzz.py -k openapi_operations -s -q -p no:cacheprovider \
  -o timeout=0 2>&1 | grep -E "^fuzz:|passed|failed|^E " 
