#!/usr/bin/env bash
# A soak test (issue 17): the livestream scenario (one 720p VP8 + Opus publisher over WHIP,
# subscribers over WHEP) held at a fixed load for a long while against a release server that
# the load generator starts pinned to core 0, in a private network namespace. The server's
# RSS is read every minute. It passes when, over the whole run:
#   - loss stayed under 0.5%,
#   - RSS grew under 5% from the reading after the first minute (buffers and pools warm) to
#     the last,
#   - the server kept one process id (it never restarted) and every transport connected.
#
#   scripts/soak.sh [SUBSCRIBERS] [MINUTES] [extra `loadtest run` options]
#
# SUBSCRIBERS defaults to 560, 80% of the 700 per core that docs/benchmarks.md measured on the
# 2-core machine with GSO; MINUTES to 30. Not part of CI (scripts/test.sh): it takes the
# machine's cores for the whole run. Needs root (unshare -n) and a release build
# (`cargo build --release -p switchyard`).
set -euo pipefail
cd "$(dirname "$0")/.."
subscribers=${1:-560}
minutes=${2:-30}
shift $(($# > 2 ? 2 : $#))
bin=${SWITCHYARD_BIN:-target/release/switchyard}
[[ -x $bin ]] || { echo "no $bin: cargo build --release -p switchyard" >&2; exit 2; }

if [[ -z ${SOAK_IN_NETNS:-} ]]; then
  exec unshare -n env SOAK_IN_NETNS=1 "$0" "$subscribers" "$minutes" "$@"
fi
ip link set lo up

out=$(mktemp -d /tmp/switchyard-soak.XXXXXX)
echo "soak: $subscribers subscribers for $minutes min; logs in $out" >&2
"$bin" loadtest run --scenario livestream --signalling whip --subscribers "$subscribers" \
  --ramp 100 --duration $((minutes * 60)) --io-backend mmsg --json "$@" \
  >"$out/report.log" 2>"$out/progress.log" &
generator=$!

# The server the generator started: the first all-in-one that appears.
server=""
for _ in $(seq 1 100); do
  server=$(pgrep -n -f "all-in-one.*--no-dev-tokens" || true)
  [[ -n $server ]] && break
  sleep 0.2
done
[[ -n $server ]] || { echo "soak: the server did not start" >&2; kill $generator; exit 1; }

# One line a minute: minute, server pid, RSS in KiB.
: >"$out/rss.log"
minute=0
while kill -0 $generator 2>/dev/null; do
  sleep 60 &
  wait $! || true
  minute=$((minute + 1))
  pid=$(pgrep -n -f "all-in-one.*--no-dev-tokens" || echo gone)
  rss=$(ps -o rss= -p "$pid" 2>/dev/null | tr -d ' ' || true)
  echo "$minute $pid ${rss:-0}" | tee -a "$out/rss.log" >&2
done
wait $generator || true

python3 - "$out" "$server" <<'PY'
import json, sys
out, server = sys.argv[1], sys.argv[2]
lines = [l.split() for l in open(f"{out}/rss.log") if l.strip()]
report = None
for line in open(f"{out}/report.log"):
    line = line.strip()
    if line.startswith("{"):
        report = json.loads(line)
if report is None or len(lines) < 2:
    sys.exit(f"soak: no report or too few readings ({len(lines)}); see {out}")
alive = [l for l in lines if l[1] != "gone"]
first, last = int(alive[0][2]), int(alive[-1][2])
growth = (last - first) / first * 100 if first else float("inf")
pids = {l[1] for l in alive}
loss = report.get("loss", 1.0) * 100
failed = report.get("failed", 0)
ok = loss < 0.5 and growth < 5 and pids == {server} and failed == 0
print(f"soak: {report.get('subscribers', '?')} subscribers, {len(lines)} min: loss {loss:.3f}%, "
      f"RSS {first} KiB after minute 1 -> {last} KiB ({growth:+.1f}%), "
      f"server pid {'unchanged' if pids == {server} else 'CHANGED ' + str(sorted(pids))}, "
      f"failed transports {failed}, p99 {report.get('latency_p99_ms')} ms: "
      f"{'PASS' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PY
