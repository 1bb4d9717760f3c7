#!/usr/bin/env bash
# The main job: what memdesc costs on the bundled real-Linux sample (page census and the
# Linux-vs-memdesc metadata estimate), then the quick benchmark on the simulated machine.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p memdesc-cli
bin=target/release/memdesc
echo "== memdesc estimate (bundled sample)"
"$bin" estimate --snapshot samples/small/end --svg target/estimate.svg
echo "== memdesc bench --quick (simulated machine)"
"$bin" bench --quick
