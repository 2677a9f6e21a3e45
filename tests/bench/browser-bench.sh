#!/usr/bin/env bash
# Browser benchmark of the workbench (not a test): builds what it needs, then runs
# tests/bench/browser-bench.mjs (see there for what is measured).
#
# usage: tests/bench/browser-bench.sh [--reps N] [--keep]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
cargo xtask build-wasm
cargo build -q -p vdi-cli --release
if [[ ! -d tests/e2e/node_modules/playwright-core ]]; then
    (cd tests/e2e && npm ci --no-audit --no-fund)
fi
exec node tests/bench/browser-bench.mjs "$@"
