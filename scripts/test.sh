#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit/property/integration tests, the no_std build,
# and the loom concurrency models. This is the command the README names and .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== core without default features (no_std, no alloc)"
cargo build -p memdesc --no-default-features
echo "== tests"
cargo test --workspace
echo "== loom models"
LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}" RUSTFLAGS="--cfg loom" \
  CARGO_TARGET_DIR=target/loom cargo test -p memdesc --release --lib -- loom_
