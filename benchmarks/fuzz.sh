#!/usr/bin/env bash
# The long form of tests/reliability/test_fuzz.py: schemathesis over every operation of a real
# `impetus serve`'s openapi.json with random seeds and EXAMPLES requests per operation (default
# 300). Prints the requests tried and the statuses seen; fails on any 5xx, schema violation or
# error not in OpenAI's shape. Record the result in docs/reliability.md (command, date, machine).
#
#   benchmarks/fuzz.sh [EXAMPLES]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTEST="${PYTEST:-.venv/bin/pytest}"
IMPETUS_FUZZ_EXAMPLES="${1:-300}" IMPETUS_FUZZ_RANDOM=1 \
  "$PYTEST" tests/reliability/test_fuzz.py -k openapi_operations -s -q -p no:cacheprovider \
  -o timeout=0 2>&1 | grep -E "^fuzz:|passed|failed|^E " 
