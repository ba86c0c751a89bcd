#!/usr/bin/env bash
# The CPU an SFU session costs the media server when its clients relay through the embedded
# TURN server (iceTransportPolicy 'relay') against the same session direct: two headless
# Chromium pages publishing 2 tracks each and subscribing to each other through
# `all-in-one --workers 1`, the server pinned to one core. CPU is the server process's
# user+system ticks while the pages hold (HOLD_MS after both decode each other), divided by the
# datagrams its SFU received meanwhile (/metrics).
#
# Runs in a private network namespace (needs root), Chromium and Node.js from scripts/test.sh.
# Prints a markdown table and writes $OUT/turn_sfu.json. Environment: BIN (default
# target/release/switchyard), OUT (default target/bench), SERVER_CORE (default 0), HOLD_MS
# (default 20000).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export ROOT BIN=${BIN:-$ROOT/target/release/switchyard}
export OUT=${OUT:-$ROOT/target/bench}
export SERVER_CORE=${SERVER_CORE:-0} HOLD_MS=${HOLD_MS:-20000}
mkdir -p "$OUT"
[[ -x $BIN ]] || { echo "no binary at $BIN (cargo build --release -p switchyard)" >&2; exit 1; }
[[ -d tests/browser/node_modules ]] || { echo "run scripts/test.sh once (it installs playwright-core)" >&2; exit 1; }

unshare -n bash -euo pipefail <<'NS'
ip link set lo up
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
received() { curl -s http://127.0.0.1:8080/metrics | awk '$1 == "switchyard_packets_received_total" {print $2}'; }

# One session with RELAY=$1; prints "cpu_ticks packets".
session() {
  local relay=$1 data=$WORK/data-$1
  taskset -c "$SERVER_CORE" "$BIN" all-in-one --data-dir "$data" --workers 1 \
    --http 127.0.0.1:8080 >"$WORK/server-$relay.log" 2>&1 &
  local pid=$!
  for _ in $(seq 50); do curl -sf http://127.0.0.1:8080/health >/dev/null && break; sleep 0.1; done
  local t0 t1
  t0=$("$BIN" token --channel room --user a --data-dir "$data")
  t1=$("$BIN" token --channel room --user b --data-dir "$data")
  local fifo=$WORK/progress-$relay
  mkfifo "$fifo"
  (cd "$ROOT/tests/browser" && RELAY=$relay HOLD_MS=$HOLD_MS \
    node relay_pages.mjs http://127.0.0.1:8080 room "$t0" "$t1" >"$WORK/pages-$relay.json" 2>"$fifo") &
  local node=$! c0 p0 c1 p1
  while read -r line; do
    case $line in
      holding) c0=$(ticks "$pid"); p0=$(received) ;;
      held) c1=$(ticks "$pid"); p1=$(received) ;;
    esac
  done <"$fifo"
  wait "$node" || { echo "pages failed (RELAY=$relay): $(tail -c 2000 "$WORK/pages-$relay.json")" >&2; exit 1; }
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$(( c1 - c0 )) $(python3 -c "print(int($p1 - $p0))")"
}

read -r d_ticks d_packets < <(session 0)
read -r r_ticks r_packets < <(session 1)
us() { python3 -c "print(f'{$1 / $hz * 1e6 / max($2, 1):.2f}')"; }
d_us=$(us "$d_ticks" "$d_packets")
r_us=$(us "$r_ticks" "$r_packets")
ratio=$(python3 -c "print(f'{$r_us / $d_us:.2f}' if $d_us > 0 else 'n/a')")
printf '| session | server CPU µs per SFU datagram | datagrams | CPU s |\n|---|---|---|---|\n'
printf '| direct (host candidates) | %s | %s | %s |\n' "$d_us" "$d_packets" "$(python3 -c "print($d_ticks / $hz)")"
printf '| through the embedded TURN (relay only) | %s | %s | %s |\n' "$r_us" "$r_packets" "$(python3 -c "print($r_ticks / $hz)")"
printf 'ratio (TURN / direct): %sx\n' "$ratio"
echo "{\"direct_us\":$d_us,\"turn_us\":$r_us,\"ratio\":\"$ratio\",\"direct_packets\":$d_packets,\"turn_packets\":$r_packets}" >"$OUT/turn_sfu.json"
NS
