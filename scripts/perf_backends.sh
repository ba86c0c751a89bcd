#!/usr/bin/env bash
# Profiles the server's core under the same fixed load on each I/O backend, to see where
# io_uring and recvmmsg/sendmmsg spend their time (docs/benchmarks.md, "io_uring against
# recvmmsg/sendmmsg, with perf").
#
# usage (root, for the private network namespace and perf):
#   scripts/perf_backends.sh [SUBSCRIBERS] [SERVER_EXE]
# Writes /tmp/perf-{mmsg,uring}.{data,json} and prints each backend's share of core 0 by
# thread and binary, then the worker's top symbols.
set -euo pipefail
cd "$(dirname "$0")/.."
SUBSCRIBERS="${1:-600}"
EXE="${2:-target/release/switchyard}"
command -v perf >/dev/null || { echo "perf is not installed" >&2; exit 1; }
exec unshare -n bash -s "$SUBSCRIBERS" "$EXE" <<'INNER'
set -euo pipefail
ip link set lo up
for b in mmsg uring; do
  echo "--- $b: $1 subscribers" >&2
  target/release/switchyard loadtest run --json --scenario livestream --subscribers "$1" \
    --duration 25 --io-backend "$b" --server-exe "$2" >"/tmp/perf-$b.json" 2>"/tmp/perf-$b.log" &
  gen=$!
  # Everyone has joined by then; the server is on core 0.
  sleep 14
  perf record -q -C 0 -g -o "/tmp/perf-$b.data" -- sleep 8 2>/dev/null
  wait "$gen"
  perf report -i "/tmp/perf-$b.data" --no-children --sort comm,dso -g none -q --stdio 2>/dev/null | head -6
  perf report -i "/tmp/perf-$b.data" --no-children --comm sy-worker-0 --sort sym -g none -q --stdio 2>/dev/null | head -20
done
INNER
