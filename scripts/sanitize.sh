#!/usr/bin/env bash
# Runs the unsafe-heavy tests under valgrind memcheck: the memdesc-host integration tests
# (the simulated machine drives every unsafe block of the core: raw page words, descriptor
# casts, TYPESAFE_BY_RCU reuse, direct and local mappings), in a debug build. Fails on any
# memcheck error (invalid read/write, use of uninitialised memory, bad free).
#
#   bash scripts/sanitize.sh                  # the default set (see TESTS below)
#   SANITIZE_TESTS="slab fault" bash scripts/sanitize.sh
#
# Under valgrind everything runs ~30-50x slower, so the property tests run few cases
# (PROPTEST_CASES, default 4) and two tests are skipped: big_machines (a 1 TiB MAP_NORESERVE
# mapping, beyond valgrind's address space) and the page cache's reader/truncation race
# stress (timing-driven; it is covered by its loom models instead). Heap leaks are not
# reported: machines are dropped with their mappings, and test code leaks on purpose.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind not found" >&2; exit 2; }
export PROPTEST_CASES="${PROPTEST_CASES:-4}"
TESTS="${SANITIZE_TESTS:-page_alloc slab folio pagecache fault torture_regressions}"
SKIP=(--skip lookups_race_truncation_and_reuse --skip one_tib_two_level)

start=$(date +%s)
args=()
for t in $TESTS; do args+=(--test "$t"); done
# Build once, then run every test binary under memcheck.
exes=$(cargo test -p memdesc-host "${args[@]}" --no-run --message-format=json 2>/dev/null \
  | grep -o '"executable":"[^"]*"' | sed 's/"executable":"//; s/"$//')
status=0
for exe in $exes; do
  name=$(basename "$exe")
  t0=$(date +%s)
  if valgrind --tool=memcheck --error-exitcode=99 --leak-check=no --quiet \
      "$exe" --test-threads=1 -q "${SKIP[@]}" >"/tmp/sanitize-$name.log" 2>&1; then
    echo "== $name: clean ($(( $(date +%s) - t0 )) s)"
  else
    echo "== $name: FAILED ($(( $(date +%s) - t0 )) s); log follows" >&2
    tail -60 "/tmp/sanitize-$name.log" >&2
    status=1
  fi
done
echo "sanitize: $([ $status = 0 ] && echo clean || echo FAILED) in $(( $(date +%s) - start )) s"
exit $status
