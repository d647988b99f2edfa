#!/usr/bin/env bash
# Saturation: N requests of service time S on GPU workers with K slots in total, all at once.
#
#   bash bench/saturation.sh            # N=100, K=10 (2 workers x 5), S=1 s, streamed and not
#
# Reports total time against 1.15 x ceil(N/K) x S, overfilled and leaked slots, FIFO
# inversions among requests for the same capacity, and queue wait p50/p99 (see
# bench/saturation.py). A report, not a test. Needs cargo and python3.
# Knobs: SAT_N, SAT_K, SAT_WORKERS, SAT_SERVICE (seconds); BENCH_SKIP_BUILD=1 reuses
# target/release/auxot; AUXOT_BIN names another binary.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BIN=${AUXOT_BIN:-$ROOT/target/release/auxot}
if [[ -z ${AUXOT_BIN:-} && -z ${BENCH_SKIP_BUILD:-} ]]; then
    (cd "$ROOT" && cargo build --release --quiet)
fi
[[ -x $BIN ]] || { echo "no binary at $BIN" >&2; exit 1; }
exec python3 "$HERE/saturation.py" --bin "$BIN" \
    -n "${SAT_N:-100}" -k "${SAT_K:-10}" --workers "${SAT_WORKERS:-2}" -s "${SAT_SERVICE:-1}"
