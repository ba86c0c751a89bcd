#!/usr/bin/env bash
# Runs every Switchyard benchmark and writes the results into docs/benchmarks.md (between the
# "bench:begin" and "bench:end" markers; the prose around them is kept) and docs/benchmarks.json.
#
#   1. criterion micro-benchmarks (benches/): SRTP, STUN, RTP rewrite, forward path, I/O loop,
#      the send path copied against zero-copy (its own network namespace, a veth sink);
#   2. in a private network namespace: `switchyard loadtest capacity` on one pinned server core
#      with recvmmsg/sendmmsg (the default) and the same ramp against Janus (videoroom) pinned
#      to the same core, in the same run; then a simulcast livestream on the same core
#      (`--simulcast`: three layers, subscribers on 180, 360 and 720 lines in turn) with its
#      comparison to the plain one printed; then with io_uring; then one channel over all the
#      machine's cores (shards, issue 17); then MCU rooms (issue 14), and
#      audio-only MCU rooms beside Janus's AudioBridge; then the named scenarios;
#   3. TURN against coturn (scripts/bench_turn*.sh) and recording (scripts/bench_recording.sh:
#      the muxer against ffmpeg, recording's CPU cost on a forwarding core);
#   4. SIP calls per core and call set-up time (scripts/sip_bench.py, SIPp on another core).
#
# Needs root (unshare -n) and two or more cores (server on core 0, generator on the last).
# Environment: BENCH_QUICK=1 for a short run (smaller steps and windows) while developing;
# SKIP_JANUS=1 to leave Janus out; SKIP_CRITERION=1 to skip the micro-benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
started=$SECONDS
step() { printf '\n==> [%3ds] %s\n' $((SECONDS - started)) "$*" >&2; }

OUT=${BENCH_OUT:-$ROOT/target/bench}
rm -rf "$OUT" && mkdir -p "$OUT"
if [[ -n ${BENCH_QUICK:-} ]]; then
  CAPACITY=(--step-seconds 2)
  MAX_SUBSCRIBERS=400
  SCENARIO_SECONDS=3
else
  CAPACITY=(--step-seconds 3)
  MAX_SUBSCRIBERS=3000
  SCENARIO_SECONDS=10
fi

step "build (release)"
cargo build --release --locked -p switchyard
BIN=$ROOT/target/release/switchyard

if [[ -z ${SKIP_CRITERION:-} ]]; then
  step "criterion micro-benchmarks"
  rm -rf target/criterion
  cargo bench --locked -p switchyard-benches -- --warm-up-time 1 --measurement-time 2 \
    >"$OUT/criterion.log" 2>&1 || { tail -30 "$OUT/criterion.log"; exit 1; }
fi

JANUS=0
if [[ -z ${SKIP_JANUS:-} ]] && command -v janus >/dev/null; then
  JANUS=1
elif [[ -z ${SKIP_JANUS:-} ]]; then
  echo "janus is not installed (apt-get install janus): comparing without it" >&2
fi

step "load tests in a private network namespace"
export BIN OUT JANUS SCENARIO_SECONDS ROOT MAX_SUBSCRIBERS
export CAPACITY_ARGS="${CAPACITY[*]}"
unshare -n bash -euo pipefail <<'NS'
ip link set lo up
cap() { # name, extra args...; STEP and MAX override the ramp's step and ceiling
  local name=$1; shift
  echo "--- capacity: $name" >&2
  "$BIN" loadtest capacity --json $CAPACITY_ARGS --step "${STEP:-50}" \
    --max "${MAX:-$MAX_SUBSCRIBERS}" "$@" >"$OUT/capacity-$name.json" 2>"$OUT/capacity-$name.log" || true
  tail -n 25 "$OUT/capacity-$name.log" >&2
}
scenario() { # name, args...
  local name=$1; shift
  echo "--- scenario: $name" >&2
  "$BIN" loadtest run --json --duration "$SCENARIO_SECONDS" "$@" >"$OUT/run-$name.json" 2>"$OUT/run-$name.log" || true
  tail -n 6 "$OUT/run-$name.log" >&2
}
if [[ $JANUS == 1 ]]; then
  # Janus on the server's core (0), like the Switchyard it is compared with.
  JANUS_CPUS=0 "$ROOT/scripts/janus.sh" "$OUT/janus" >"$OUT/janus.pid"
  JPID=$(tail -n1 "$OUT/janus.pid")
  cap mmsg --io-backend mmsg --compare-janus --janus-pid "$JPID"
  kill "$JPID" 2>/dev/null || true
else
  cap mmsg --io-backend mmsg
fi
# Issue 12: capacity per core for a simulcast livestream where subscribers take mixed layers,
# beside the plain one above (the section in docs/benchmarks.md is written by hand from this).
cap mmsg-simulcast --io-backend mmsg --simulcast
python3 - "$OUT/capacity-mmsg.json" "$OUT/capacity-mmsg-simulcast.json" >&2 <<'PY' || true
import json, sys
def last(path):
    lines = [l for l in open(path) if l.startswith("{")]
    return json.loads(lines[-1]) if lines else {}
plain, sim = last(sys.argv[1]), last(sys.argv[2])
for name, c in (("plain 720p", plain), ("simulcast, mixed layers", sim)):
    us = c.get("cpu_us_per_forwarded_packet")
    print(f"{name}: {c.get('subscribers_per_core')} subscribers/core, "
          f"{c.get('forwarded_pps_per_core', 0):.0f} forwarded pps/core, "
          f"{'-' if us is None else f'{us:.2f}'} us/packet; stopped: {c.get('stopped_because')}")
held = [s for s in sim.get("steps", []) if s["subscribers"] == sim.get("subscribers")]
for step in held:
    for l in step.get("layers", []):
        print(f"  at {step['subscribers']}: layer {l['rid']}: {l['video_pps_per_subscriber']:.1f} video pps each (sends {l['layer_pps']:.1f})")
PY
cap uring --io-backend uring
# Issue 17: one channel over every core the machine has (its worker, then shards linked
# in-process), against one worker above; the generator shares the last core. On 16 cores or
# more the scaling runs below take its place (one generator thread could not load 16 workers).
if (( $(nproc) < 16 )); then
  cap workers --server-workers "$(nproc)"
fi
# Issue 17's scaling goal (7x at 8 workers), on 16 cores or more: the channel on 1, 2, 4 and 8
# workers (cores 0-7), loaded by as many generator net threads (the last cores, one each). Step
# and ceiling grow with the workers: one worker alone can reach the common ceiling, and 8 at one
# worker's step would take over ten minutes to ramp.
if (( $(nproc) >= 16 )); then
  for w in 1 2 4 8; do
    STEP=$((50 * w)) MAX=$((MAX_SUBSCRIBERS * w)) cap "scale-$w" --server-workers "$w" --generator-threads "$w"
  done
  python3 - "$OUT" >&2 <<'PY' || true
import json, sys
def last(w):
    lines = [l for l in open(f"{sys.argv[1]}/capacity-scale-{w}.json") if l.startswith("{")]
    return json.loads(lines[-1]) if lines else {}
one = last(1).get("subscribers") or 0
for w in (1, 2, 4, 8):
    c = last(w)
    held = c.get("subscribers") or 0
    ratio = f"{held / one:.2f}x" if one else "-"
    print(f"scale {w} worker(s): {held} subscribers, {ratio} of one worker; stopped: {c.get('stopped_because')}")
PY
fi
# Issue 14: MCU connections per core (rooms of 4, VP8 640x360 + Opus, the default canvas; then a
# 1280x720 canvas in rooms of 4 and 8), and
# audio-only rooms beside Janus's AudioBridge on the same core (the section in
# docs/benchmarks.md is written by hand from these).
echo "--- capacity: mcu" >&2
"$BIN" loadtest capacity --json --mode mcu --room 4 --max 400 --step-seconds 3 \
  >"$OUT/capacity-mcu.json" 2>"$OUT/capacity-mcu.log" || true
tail -n 12 "$OUT/capacity-mcu.log" >&2
# The same with a 720p composite, in rooms of 4 and of 8 (the server inherits MCU__*).
for room in 4 8; do
  echo "--- capacity: mcu, 1280x720 canvas, rooms of $room" >&2
  MCU__CANVASWIDTH=1280 MCU__CANVASHEIGHT=720 "$BIN" loadtest capacity --json --mode mcu \
    --room "$room" --max 400 --step-seconds 3 \
    >"$OUT/capacity-mcu-720p-$room.json" 2>"$OUT/capacity-mcu-720p-$room.log" || true
  tail -n 12 "$OUT/capacity-mcu-720p-$room.log" >&2
done
if [[ $JANUS == 1 ]]; then
  JANUS_CPUS=0 "$ROOT/scripts/janus.sh" "$OUT/janus-mcu" >"$OUT/janus-mcu.pid"
  JPID=$(tail -n1 "$OUT/janus-mcu.pid")
  echo "--- capacity: mcu audio only, against Janus AudioBridge" >&2
  "$BIN" loadtest capacity --json --mode mcu --audio-only --rooms-per-step 2 --max 1000 \
    --step-seconds 3 --compare-janus --janus-pid "$JPID" \
    >"$OUT/capacity-mcu-audio.json" 2>"$OUT/capacity-mcu-audio.log" || true
  tail -n 30 "$OUT/capacity-mcu-audio.log" >&2
  # A fresh Janus: AudioBridge rooms go on mixing (and costing) after their participants left.
  kill "$JPID" 2>/dev/null || true
  JANUS_CPUS=0 "$ROOT/scripts/janus.sh" "$OUT/janus-meeting" >"$OUT/janus-mcu.pid"
  JPID=$(tail -n1 "$OUT/janus-mcu.pid")
  # A meeting as meetings go: rooms of 10 where 2 talk and 8 listen (silence, marked silent
  # by RFC 6464 levels, as browsers send from an unmuted microphone in a quiet room).
  echo "--- capacity: mcu audio only, rooms of 10 with 2 talkers, against Janus AudioBridge" >&2
  "$BIN" loadtest capacity --json --mode mcu --audio-only --room 10 --talkers 2 --max 1000 \
    --step-seconds 3 --compare-janus --janus-pid "$JPID" \
    >"$OUT/capacity-mcu-meeting.json" 2>"$OUT/capacity-mcu-meeting.log" || true
  tail -n 30 "$OUT/capacity-mcu-meeting.log" >&2
  kill "$JPID" 2>/dev/null || true
fi
scenario livestream --scenario livestream --subscribers 200
scenario meeting --scenario meeting --participants 8
scenario audio-room --scenario audio-room --publishers 10 --subscribers 100
NS

step "TURN relay against coturn, an SFU session through TURN against direct (the tables go in docs/benchmarks.md by hand)"
if command -v turnserver >/dev/null; then
  BIN=$BIN OUT=$OUT "$ROOT/scripts/bench_turn.sh" | tee "$OUT/turn.md"
  BIN=$BIN OUT=$OUT "$ROOT/scripts/bench_turn_sfu.sh" | tee "$OUT/turn_sfu.md"
else
  echo "coturn is not installed (apt-get install coturn): no TURN comparison" >&2
fi

step "recording: the muxer against ffmpeg, and recording's cost on a forwarding core (docs/benchmarks.md by hand)"
BIN=$BIN OUT=$OUT "$ROOT/scripts/bench_recording.sh" | tee "$OUT/recording.md"

step "SIP calls per core and set-up time (issue 16; docs/benchmarks.md by hand)"
if command -v sipp >/dev/null; then
  unshare -n bash -c "ip link set lo up; python3 '$ROOT/scripts/sip_bench.py' '$BIN'" | tee "$OUT/sip.jsonl"
else
  echo "SIPp is not installed (apt-get install sip-tester): no SIP benchmark" >&2
fi

step "writing docs/benchmarks.md and docs/benchmarks.json"
python3 "$ROOT/scripts/bench_report.py" "$OUT" "$ROOT/docs/benchmarks.md" "$ROOT/docs/benchmarks.json"
step "done"
