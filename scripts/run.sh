#!/usr/bin/env bash
# The main job, on the bundled real-Linux sample (samples/small, recorded on Linux 6.18 with
# `memdesc capture`): replay its kernel allocation stream through memdesc's allocators on a
# simulated machine as large as the traced one, then estimate what its page metadata costs in
# Linux and in memdesc; finally the quick benchmark. Needs only a stable Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p memdesc-cli
bin=target/release/memdesc
echo "== memdesc replay (bundled sample, simulated machine)"
"$bin" replay samples/small --svg target/replay.svg
echo
echo "== memdesc estimate (bundled sample, end snapshot)"
"$bin" estimate --snapshot samples/small/end --svg target/estimate.svg
echo
echo "== memdesc bench --quick (simulated machine)"
"$bin" bench --quick
