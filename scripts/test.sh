#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit/property/integration tests, the no_std build,
# the loom concurrency models and a 60 s torture run. This is the command the README names and
# .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== core without default features (no_std, no alloc: the page allocator alone), then feature builds (no warnings): page allocator + slab, each feature alone with its dependencies"
(
  export RUSTFLAGS="${RUSTFLAGS:-} -D warnings"
  cargo build -p memdesc --no-default-features
  cargo build -p memdesc --no-default-features --features slab
  cargo clippy -p memdesc --all-targets --no-default-features --features slab -- -D warnings
  for feature in alloc slab folio pgtable vmalloc page_pool zsmalloc z3fold pools health; do
    echo "-- --features $feature"
    cargo build -p memdesc --no-default-features --features "$feature"
  done
  cargo test -p memdesc --no-default-features --features slab --lib
)
echo "== tests"
cargo test --workspace
cargo run -p memdesc --example quickstart
echo "== loom models"
LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}" RUSTFLAGS="--cfg loom" \
  CARGO_TARGET_DIR=target/loom cargo test -p memdesc --release --lib -- loom_
echo "== torture (60 s, 2 CPUs, fault and poison injection, the debug build the tests made)"
# Fails unless violations, lost_pages and corrupted_bytes are all 0 (the command itself exits
# non-zero then, printing the seed and op-log tail); the JSON is checked as well. The debug
# binary keeps the core's debug assertions on and needs no separate release build.
cargo build -p memdesc-cli
TORTURE_SECONDS="${TORTURE_SECONDS:-60}"
out=$(target/debug/memdesc torture --seconds "$TORTURE_SECONDS" --threads 2 --seed "${TORTURE_SEED:-$RANDOM}" \
  --fail-rate 0.01 --poison-rate 0.0001 --json)
echo "$out" | grep -E '"(seed|ops|ops_per_sec|violations|lost_pages|corrupted_bytes|injected_failures|poisoned_pages|poison_refused|hwpoison_pages)"'
for field in violations lost_pages corrupted_bytes; do
  echo "$out" | grep -q "\"$field\": 0," || { echo "torture: $field is not 0" >&2; exit 1; }
done
echo "== bare-metal kernel: fmt and clippy (its own workspace), then QEMU (short: bad input, a fault, a caught leak, 2 SMP boots)"
(cd kernel && cargo fmt -- --check && env -u RUSTFLAGS cargo clippy --release -- -D warnings)
bash scripts/qemu.sh --short
