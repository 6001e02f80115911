#!/usr/bin/env bash
# The test command: installs what the tests need, builds the engine and the
# guest plugins, and runs every test (unit, end-to-end) in release mode, so
# wasmtime is compiled once for the binary, the tests and the benchmarks.
#
#   bash tests/run.sh            # everything
#   bash tests/run.sh e2e::wordcount   # extra arguments filter the tests
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Every cargo test's output also goes here, to total the results at the end.
results=$(mktemp)
trap 'rm -f "$results"' EXIT

step "toolchain: wasm32-wasip2 target"
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi

step "toolchain: componentize-py (Python plugins), in plugins/target/python"
if [ ! -x plugins/target/python/bin/componentize-py ]; then
  mkdir -p plugins/target
  python3 -m venv plugins/target/python
  plugins/target/python/bin/pip install --quiet componentize-py==0.25.1
fi

step "build: sluice (release)"
cargo build --release --locked --bin sluice

step "test: the SDK and the plugins' own unit tests (host target)"
cargo test --locked --manifest-path plugins/Cargo.toml --workspace 2>&1 | tee -a "$results"

step "test: engine unit tests and end-to-end (the build step compiles the plugins)"
cargo test --release --locked --workspace -- "$@" 2>&1 | tee -a "$results"

step "benchmarks compile"
cargo bench --locked -p sluice --no-run

passed=$(grep -o '[0-9]* passed' "$results" | awk '{s += $1} END {print s + 0}')
failed=$(grep -o '[0-9]* failed' "$results" | awk '{s += $1} END {print s + 0}')
printf '\ntotal: %s passed, %s failed\n' "$passed" "$failed"
