#!/usr/bin/env bash
# Runs the unsafe-heavy and concurrent code under the sanitizers the stable toolchain ships
# (enabled with RUSTC_BOOTSTRAP=1): AddressSanitizer and ThreadSanitizer. For each one it builds,
# in its own target directory (target/sanitize-MODE), the memdesc unit tests and the
# memdesc-host integration tests (the simulated machine drives every unsafe block of the core:
# raw page words, descriptor casts, TYPESAFE_BY_RCU reuse, direct and local mappings) and runs
# them, then runs a short torture (examples/short_torture.rs: 2 threads, fault and hwpoison
# injection). Fails on any sanitizer report or test failure. Not part of scripts/test.sh: a
# full run takes tens of minutes on two cores.
#
#   bash scripts/sanitize.sh                         # address, then thread
#   SANITIZE_MODES=thread bash scripts/sanitize.sh   # one sanitizer
#   SANITIZE_TESTS="slab fault" bash scripts/sanitize.sh   # some memdesc-host tests only
#   TORTURE_SECONDS=30 bash scripts/sanitize.sh
#
# The standard library is not rebuilt with the sanitizer (-Zbuild-std needs the rust-src
# component, which this toolchain lacks), so:
# - `-Cunsafe-allow-abi-mismatch=sanitizer` lets our instrumented crates link the prebuilt std
#   (the only ABI effect of the flag is the instrumentation itself, so this is sound for
#   testing; it is what -Zbuild-std would avoid).
# - ASan: std's own heap accesses are not checked, ours are (every allocation still goes
#   through the intercepted malloc/free). Leak detection is off: tests leak on purpose.
# - TSan: synchronisation done inside the uninstrumented std (libtest's result channel, Arc's
#   release/acquire on drop, a thread's join packet, std's thread-info map) is invisible, so
#   TSan reports races on memory that std orders. scripts/tsan.supp suppresses exactly those
#   std-internal objects and documents each; the core's own atomics and every access of
#   memdesc code are instrumented, and no pattern matches a frame of memdesc or test code.
# - Both: `handle_segv=0`, because the guard-page test expects its child process to die of
#   SIGSEGV, which the sanitizers would otherwise turn into an error exit.
#
# Skipped everywhere (as under the valgrind run this script replaces): one_tib_two_level (a
# 1 TiB MAP_NORESERVE machine; not tried under the sanitizers' shadow memory) and the page
# cache's timing-driven reader/truncation stress (covered by loom models). Property tests run
# PROPTEST_CASES (default 16) cases.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
export PROPTEST_CASES="${PROPTEST_CASES:-16}"
MODES="${SANITIZE_MODES:-address thread}"
TORTURE_SECONDS="${TORTURE_SECONDS:-10}"
TARGET=x86_64-unknown-linux-gnu
SKIP=(--skip one_tib_two_level --skip lookups_race_truncation_and_reuse)
export ASAN_OPTIONS="detect_leaks=0:handle_segv=0:halt_on_error=1"
export TSAN_OPTIONS="suppressions=$PWD/scripts/tsan.supp:handle_segv=0:halt_on_error=0:exitcode=66:report_signal_unsafe=0"

pkgs=(-p memdesc-host)
if [ -n "${SANITIZE_TESTS:-}" ]; then
  for t in $SANITIZE_TESTS; do pkgs+=(--test "$t"); done
else
  pkgs=(-p memdesc --lib -p memdesc-host --tests)
fi

start=$(date +%s)
status=0
for mode in $MODES; do
  export RUSTFLAGS="-Zsanitizer=$mode -Cunsafe-allow-abi-mismatch=sanitizer"
  export CARGO_TARGET_DIR="target/sanitize-$mode"
  echo "== $mode: building"
  exes=$(cargo test "${pkgs[@]}" --target "$TARGET" --no-run --message-format=json \
    | grep -o '"executable":"[^"]*"' | sed 's/"executable":"//; s/"$//')
  cargo build -p memdesc-host --example short_torture --target "$TARGET" -q
  for exe in $exes; do
    name=$(basename "$exe")
    log="$CARGO_TARGET_DIR/$name.log"
    t0=$(date +%s)
    if "$exe" -q "${SKIP[@]}" >"$log" 2>&1 && ! grep -q "Sanitizer" "$log"; then
      echo "== $mode $name: clean ($(( $(date +%s) - t0 )) s)"
    else
      echo "== $mode $name: FAILED ($(( $(date +%s) - t0 )) s); see $log" >&2
      grep -A30 -m3 "Sanitizer\|panicked" "$log" >&2 || tail -40 "$log" >&2
      status=1
    fi
  done
  log="$CARGO_TARGET_DIR/torture.log"
  t0=$(date +%s)
  if "$CARGO_TARGET_DIR/$TARGET/debug/examples/short_torture" "$TORTURE_SECONDS" 2 0.01 0.0001 "${TORTURE_SEED:-$RANDOM}" \
      >"$log" 2>&1 && ! grep -q "Sanitizer" "$log"; then
    echo "== $mode torture: clean ($(( $(date +%s) - t0 )) s): $(grep '^torture:' "$log")"
  else
    echo "== $mode torture: FAILED; see $log" >&2
    grep -A30 -m3 "Sanitizer\|panicked" "$log" >&2 || tail -40 "$log" >&2
    status=1
  fi
done
echo "sanitize: $([ $status = 0 ] && echo clean || echo FAILED) in $(( $(date +%s) - start )) s"
exit $status
