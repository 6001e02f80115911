#!/usr/bin/env bash
# The demo: builds sluice and the two plugins it needs, then streams a few
# text files through word count, one file every 300 ms, so each lands in its
# own micro-batch. Needs only Rust (rustup); installs the wasm32-wasip2 target
# and the system packages the build needs (engine/build-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
bash engine/build-deps.sh
echo "==> building sluice and the word-split / word-count plugins (first time: a few minutes)"
cargo build --release --quiet --bin sluice
cargo build --release --quiet --target wasm32-wasip2 --manifest-path plugins/Cargo.toml -p word-split -p word-count

echo "==> streaming plugins/demo/input/*.txt through plugins/demo/wordcount.toml"
for file in plugins/demo/input/*.txt; do
  cat "$file"
  sleep 0.3
done | target/release/sluice run plugins/demo/wordcount.toml
