#!/usr/bin/env bash
# Builds the bare-metal kernel (kernel/) and boots it under QEMU (TCG): first with bad input (a
# corrupt memory map, too little RAM, an unknown option), expecting a clear message and the
# bad-input status; then with several memory sizes, CPU counts and both memmap layouts.
#
#   bash scripts/qemu.sh           # the full matrix (a few minutes)
#   bash scripts/qemu.sh --short   # the CI subset (scripts/test.sh)
#
# It also boots with debug options that must fail: a page fault (also a write past a guarded
# block into its guard page), ud2 and a panic must be reported (status 39/37, never a triple
# fault), and a leaked page or a stray write injected into the torture must be found by its
# checks (status 35).
#
# Each run prints the kernel's last line, one JSON object. The script fails if any run hangs
# (timeout), faults, panics, reports a failed self-test or any violation, or runs too few
# torture operations. QEMU's isa-debug-exit turns the kernel's code v into status 2v+1:
# 33 success, 35 check failed, 37 panic, 39 CPU exception, 41 bad input. A triple fault with
# -no-reboot exits 0, so 0 is a failure too. KVM is not used (see README: "A real kernel").
set -euo pipefail
cd "$(dirname "$0")/.."

short=0
case "${1:-}" in
  --short) short=1 ;;
  "") ;;
  -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--short]" >&2; exit 2 ;;
esac

if ! command -v qemu-system-x86_64 >/dev/null; then
  echo "== installing qemu-system-x86 (Debian package)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 >/dev/null
fi

echo "== building the kernel (kernel/, its own workspace and flags)"
# The kernel's flags live in kernel/.cargo/config.toml and its link arguments in its build.rs;
# a RUSTFLAGS variable would replace the former, so it is removed here.
(cd kernel && env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u CARGO_BUILD_RUSTFLAGS -u CARGO_TARGET_DIR \
  cargo build --release --quiet)
KERNEL=kernel/target/release/memdesc-kernel

logdir=$(mktemp -d)
trap 'rm -rf "$logdir"' EXIT
failures=0
n=0

field() { # field NAME JSON -> value (numbers and plain strings)
  sed -n "s/.*\"$1\": \"\{0,1\}\([^\",}]*\)\"\{0,1\}[,}].*/\1/p" <<<"$2"
}

boot() { # boot LOG TIMEOUT MEM SMP APPEND -> QEMU's status
  local log=$1 t=$2 mem=$3 smp=$4 append=$5
  set +e
  # Guest RAM from a memfd: QEMU madvises anonymous guest RAM for transparent huge pages, so
  # every first touch of a 2 MiB guest range made the host allocate (and often compact for) a
  # huge page; that put seconds of host page faults into memmap_init_ms (30-50 s for an 8 GiB
  # two-level boot on a loaded host instead of 0.2 s) and pinned all guest RAM on the host.
  timeout "$t" qemu-system-x86_64 -M pc,memory-backend=mem -object memory-backend-memfd,id=mem,size="$mem" \
    -accel tcg -m "$mem" -smp "$smp" \
    -nodefaults -no-user-config -no-reboot -display none -serial stdio \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
    -kernel "$KERNEL" -append "$append" </dev/null >"$log" 2>&1
  local rc=$?
  set -e
  return $rc
}

run() { # run MEM SMP MIN_OPS APPEND
  local mem=$1 smp=$2 min_ops=$3 append=$4
  n=$((n + 1))
  local log="$logdir/run$n.log" rc=0
  echo "-- run $n: -m $mem -smp $smp, '$append'"
  boot "$log" "$((short ? 240 : 600))" "$mem" "$smp" "$append" || rc=$?
  local json
  json=$(grep -a '^{"cpus"' "$log" | tail -n 1 | tr -d '\r' || true)
  local why=""
  case $rc in
    33) ;;
    124) why="hung (timeout)" ;;
    0) why="no exit status (triple fault or reset)" ;;
    *) why="exit status $rc" ;;
  esac
  if [[ -z $why && -z $json ]]; then why="no JSON line"; fi
  if [[ -z $why ]]; then
    [[ $(field selftest "$json") == ok ]] || why="self-test: $(field selftest "$json")"
    [[ $(field violations "$json") == 0 ]] || why="${why:+$why; }violations: $(field violations "$json")"
    local ops
    ops=$(field torture_ops "$json")
    ((ops >= min_ops)) || why="${why:+$why; }torture_ops $ops < $min_ops"
    ((smp == 1)) || (($(field cpus "$json") == smp)) || why="${why:+$why; }cpus $(field cpus "$json") != $smp"
  fi
  echo "$json"
  if [[ -n $why ]]; then
    echo "FAIL run $n: $why; console tail:" >&2
    tail -n 25 "$log" >&2
    failures=$((failures + 1))
  fi
}

bad() { # bad MEM APPEND EXPECTED_TEXT [STATUS [MARKER]]: a run that must stop with a message
  local mem=$1 append=$2 text=$3 want=${4:-41} marker=${5:-BAD INPUT}
  n=$((n + 1))
  local log="$logdir/run$n.log" rc=0
  echo "-- must fail $n: -m $mem, '$append' (expect status $want and '$text')"
  boot "$log" 120 "$mem" 1 "$append" || rc=$?
  local msg
  msg=$(grep -a "$marker" "$log" | tr -d '\r' || true)
  echo "   status $rc: ${msg:-<no message>}"
  if [[ $rc != "$want" || $msg != *"$text"* ]]; then
    echo "FAIL run $n: expected status $want and '$text'; console tail:" >&2
    tail -n 15 "$log" >&2
    failures=$((failures + 1))
  fi
}

echo "== bad input (each must be refused with a message and status 41)"
bad 256M "e820_add=0x2000000,0x100000,1" "overlaps"
bad 256M "e820_add=0x40000123,0x100000,1" "does not start on a 4 KiB boundary"
bad 40M "memmap=flat" "needs at least"
bad 256M "memmap=flat bogus=1" "unknown command-line option 'bogus=1'"
if ((!short)); then
  bad 256M "memmap=three-level" "bad value in command-line option 'memmap=three-level'"
fi
echo "== deliberate failures (a CPU exception or a panic must print and exit non-zero, never triple-fault)"
bad 256M "crash=hole" "page fault (vector 14)" 39 "FAULT"
if ((!short)); then
  bad 256M "crash=ud" "invalid opcode (vector 6)" 39 "FAULT"
  bad 256M "crash=panic" "crash=panic asked for a panic" 37 "PANIC"
  bad 256M "crash=guard" "page fault (vector 14)" 39 "FAULT"
fi
echo "== broken runs (the torture's checks must catch a leaked page and a stray write: status 35)"
bad 256M "torture_s=1 crash=leak" "raw pages in use" 35 "TORTURE VIOLATION"
if ((!short)); then
  bad 256M "torture_s=1 crash=scribble" "was overwritten" 35 "TORTURE VIOLATION"
fi

echo "== good runs (TCG)"
if ((short)); then
  run 128M 2 5000 "memmap=flat torture_s=1"
  run 256M 2 5000 "memmap=two-level torture_s=1"
else
  run 128M 1 10000 "memmap=flat torture_s=2"
  run 128M 2 10000 "memmap=two-level torture_s=2"
  run 1G 4 10000 "memmap=flat torture_s=4"
  run 8G 2 5000 "memmap=two-level torture_s=3"
  run 8G 1 5000 "memmap=flat torture_s=3"
  run 1G 2 100000 "memmap=two-level torture_s=15 seed=7"
fi

if ((failures)); then
  echo "qemu: $failures of $n runs failed" >&2
  exit 1
fi
echo "qemu: all $n runs passed"
