#!/usr/bin/env bash
# TURN relay CPU per relayed packet: Switchyard's embedded TURN against coturn (turnserver) in
# the same run, each pinned to the same core, under the same turnutils_uclient load (sessions
# relaying through channels to turnutils_peer), at 120-byte and 1200-byte payloads.
#
# Runs in a private network namespace (needs root). Prints a markdown table and writes
# $OUT/turn.json. Environment: BIN (default target/release/switchyard), OUT (default
# target/bench), SERVER_CORE (default 0), LOAD_CORE (default: the last core), SESSIONS (50),
# MESSAGES per session (1000), INTERVAL_MS between a session's packets (5), PERF=1 to sample
# each server with `perf record` during its run and print how its CPU splits between the
# kernel and user space.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export BIN=${BIN:-$ROOT/target/release/switchyard}
export OUT=${OUT:-$ROOT/target/bench}
export SERVER_CORE=${SERVER_CORE:-0}
export LOAD_CORE=${LOAD_CORE:-$(($(nproc) - 1))}
export SESSIONS=${SESSIONS:-50} MESSAGES=${MESSAGES:-1000} INTERVAL_MS=${INTERVAL_MS:-5}
mkdir -p "$OUT"
[[ -x $BIN ]] || { echo "no binary at $BIN (cargo build --release -p switchyard)" >&2; exit 1; }
command -v turnserver >/dev/null || { echo "coturn is not installed (apt-get install coturn)" >&2; exit 1; }

unshare -n bash -euo pipefail <<'NS'
ip link set lo up
SECRET=bench-turn-secret-0123456789
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [[ -n ${KEEP:-} ]] || rm -rf "$WORK"' EXIT

# User+system CPU ticks of a process and its threads.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

taskset -c "$LOAD_CORE" turnutils_peer -L 127.0.0.1 -p 3480 >/dev/null 2>&1 &
sleep 0.3

# Runs the load against the server with pid $1 on port $2; prints "cpu_seconds packets".
measure() {
  local pid=$1 port=$2 size=$3 user=$4
  local before after log=$WORK/uclient-$user.log
  before=$(ticks "$pid")
  local perf=
  if [[ -n ${PERF:-} ]]; then
    perf record -F 2999 -p "$pid" -o "$WORK/perf-$user.data" >/dev/null 2>&1 &
    perf=$!
  fi
  taskset -c "$LOAD_CORE" turnutils_uclient -p "$port" -n "$MESSAGES" -m "$SESSIONS" -l "$size" \
    -z "$INTERVAL_MS" -e 127.0.0.1 -r 3480 -X -g -c -W "$SECRET" -u "$user" 127.0.0.1 >"$log" 2>&1 || true
  after=$(ticks "$pid")
  if [[ -n $perf ]]; then
    kill -INT "$perf"; wait "$perf" || true
    perf report -i "$WORK/perf-$user.data" --sort dso --stdio 2>/dev/null |
      awk -v who="$user" '$1 ~ /%$/ {print "  " who ": " $1 " " $2}' | head -4 >&2
  fi
  local sent recv lost
  sent=$(grep -o 'tot_send_msgs=[0-9]*' "$log" | tail -1 | cut -d= -f2)
  recv=$(grep -o 'tot_recv_msgs=[0-9]*' "$log" | tail -1 | cut -d= -f2)
  lost=$(grep -o 'Total lost packets [0-9]*' "$log" | tail -1 | awk '{print $4}')
  # Each message crosses the relay twice: client to peer, and the echo back.
  echo "$(( after - before )) $(( ${sent:-0} + ${recv:-0} )) ${lost:-?}"
}

taskset -c "$SERVER_CORE" turnserver -n --listening-ip=127.0.0.1 --relay-ip=127.0.0.1 \
  --listening-port=3479 --use-auth-secret --static-auth-secret="$SECRET" --realm=bench \
  --allow-loopback-peers --no-cli --no-tls --no-dtls --relay-threads=1 \
  --min-port=30000 --max-port=39999 --log-file=stdout --simple-log >"$WORK/coturn.log" 2>&1 &
coturn=$!
TURN__SECRET=$SECRET TURN__ALLOWLOOPBACKPEERS=true TURN__USERQUOTA=100000 taskset -c "$SERVER_CORE" "$BIN" all-in-one \
  --data-dir "$WORK/data" --workers 1 --http 127.0.0.1:8080 >"$WORK/switchyard.log" 2>&1 &
ours=$!
sleep 1.5

printf '| payload | coturn CPU µs/packet | Switchyard CPU µs/packet | ratio | lost (coturn / ours) |\n'
printf '|---|---|---|---|---|\n'
json="["
for size in 120 1200; do
  read -r c_ticks c_packets c_lost < <(measure "$coturn" 3479 "$size" "coturn$size")
  read -r s_ticks s_packets s_lost < <(measure "$ours" 3478 "$size" "ours$size")
  c_us=$(python3 -c "print(f'{$c_ticks / $hz * 1e6 / max($c_packets, 1):.2f}')")
  s_us=$(python3 -c "print(f'{$s_ticks / $hz * 1e6 / max($s_packets, 1):.2f}')")
  ratio=$(python3 -c "print(f'{$s_us / $c_us:.2f}' if $c_us > 0 else 'n/a')")
  printf '| %s B | %s | %s | %sx | %s / %s |\n' "$size" "$c_us" "$s_us" "$ratio" "$c_lost" "$s_lost"
  json+="{\"payload\":$size,\"coturn_us_per_packet\":$c_us,\"switchyard_us_per_packet\":$s_us,\"ratio\":\"$ratio\",\"coturn_packets\":$c_packets,\"switchyard_packets\":$s_packets,\"coturn_lost\":\"$c_lost\",\"switchyard_lost\":\"$s_lost\"},"
done
echo "${json%,}]" >"$OUT/turn.json"
NS
