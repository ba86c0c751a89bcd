#!/usr/bin/env bash
# Recording benchmarks (issue 15), printed as Markdown tables for docs/benchmarks.md:
#
#   1. the muxer against ffmpeg: a 60 s two-person 1280x720 grid (VP8 2 Mbit/s CBR, Opus), both
#      on one pinned core with one thread, from the same two VP8+Opus inputs (made by ffmpeg
#      first, not timed): wall time and CPU seconds of each, and the ratio;
#   2. recording overhead: one pinned server core forwarding 10 publishers (720p VP8 about
#      1.5 Mbit/s + Opus) to 10 subscribers (`switchyard loadtest run --scenario livestream`),
#      in a channel that is not recorded and in one that is (20 tracks written), same server,
#      one after the other: the server's CPU in each.
#
# Usage: BIN=target/release/switchyard OUT=target/bench scripts/bench_recording.sh
# Needs root (unshare -n), ffmpeg, and two cores (server or muxer on core 0, the rest on 1).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/target/release/switchyard}
OUT=${OUT:-$PWD/target/bench}/recording
SECONDS_LONG=${MUX_SECONDS:-60}
RUN_SECONDS=${RUN_SECONDS:-20}
rm -rf "$OUT" && mkdir -p "$OUT"

echo "inputs: two ${SECONDS_LONG} s 1280x720 VP8 + Opus files (ffmpeg, not timed)" >&2
ffmpeg -v error -f lavfi -i "testsrc=size=1280x720:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
  -t "$SECONDS_LONG" -c:v libvpx -deadline realtime -cpu-used 8 -b:v 1500k -c:a libopus -ac 1 "$OUT/a.mkv"
ffmpeg -v error -f lavfi -i "smptebars=size=1280x720:rate=30" -f lavfi -i "sine=frequency=660:sample_rate=48000" \
  -t "$SECONDS_LONG" -c:v libvpx -deadline realtime -cpu-used 8 -b:v 1500k -c:a libopus -ac 1 "$OUT/b.mkv"

# wall seconds, user+system CPU seconds of a command on core 0.
timed() {
  local log=$1; shift
  /usr/bin/time -f "%e %U %S" -o "$log.time" taskset -c 0 "$@" >"$log" 2>&1
  awk '{printf "%.2f %.2f\n", $1, $2 + $3}' "$log.time"
}
echo "muxing with switchyard mux" >&2
read -r sy_wall sy_cpu < <(timed "$OUT/switchyard-mux.log" "$BIN" mux --width 1280 --height 720 \
  --fps 30 --video-bitrate 2000000 -o "$OUT/switchyard.mkv" "$OUT/a.mkv" "$OUT/b.mkv")
echo "muxing with ffmpeg (the same grid: two 16:9 tiles side by side, letterboxed)" >&2
read -r ff_wall ff_cpu < <(timed "$OUT/ffmpeg-mux.log" ffmpeg -v error -y -threads 1 \
  -filter_threads 1 -filter_complex_threads 1 -i "$OUT/a.mkv" -i "$OUT/b.mkv" -filter_complex \
  "[0:v]scale=638:358[l];[1:v]scale=638:358[r];[l][r]hstack=inputs=2,pad=1280:720:0:181,pad=1280:720[v];[0:a][1:a]amix=inputs=2:normalize=0[a]" \
  -map "[v]" -map "[a]" -c:v libvpx -deadline realtime -cpu-used 6 -threads 1 -b:v 2M -minrate 2M \
  -maxrate 2M -c:a libopus -b:a 64k -ac 1 "$OUT/ffmpeg.mkv")
probe() { ffprobe -v error -show_entries format=duration -of csv=p=0 "$1"; }
cat <<EOF
| muxing a ${SECONDS_LONG} s two-person 1280x720 grid, one core | wall s | CPU s | output s |
|---|---|---|---|
| switchyard mux | $sy_wall | $sy_cpu | $(probe "$OUT/switchyard.mkv") |
| ffmpeg (scale, hstack, pad, amix; libvpx realtime cpu-used 6, 1 thread) | $ff_wall | $ff_cpu | $(probe "$OUT/ffmpeg.mkv") |
| ratio ffmpeg / switchyard | $(awk "BEGIN{printf \"%.2f\", $ff_wall/$sy_wall}")x | $(awk "BEGIN{printf \"%.2f\", $ff_cpu/$sy_cpu}")x | |
EOF

echo "recording overhead: 10 publishers to 10 subscribers, not recorded, then recorded" >&2
export BIN OUT RUN_SECONDS
unshare -n bash -euo pipefail <<'NS'
ip link set lo up
data=$OUT/server-data
mkdir -p "$data"
ADMIN__IPADDRESSES=127.0.0.1/32 SYNC__MAXCONNECTIONSPERADDRESS=0 RUST_LOG=warn \
  taskset -c 0 "$BIN" all-in-one --workers 1 --mcu-workers 1 --media-bind 127.0.0.1 \
  --public-ip 127.0.0.1 --data-dir "$data" >"$OUT/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:8080/health >/dev/null && break; sleep 0.1; done
key=$(cat "$data/admin-api-key")
curl -sf -X POST -H "X-API-Key: $key" http://127.0.0.1:9090/admin/api/v1/channels/bench-rec/recording >/dev/null
for channel in bench-plain bench-rec; do
  taskset -c 1 "$BIN" loadtest run --json --url http://127.0.0.1:8080 --server-pid "$pid" --data-dir "$data" \
    --scenario livestream --publishers 10 --subscribers 10 --channel "$channel" \
    --duration "$RUN_SECONDS" >"$OUT/run-$channel.json" 2>"$OUT/run-$channel.log" || true
done
kill "$pid"; wait "$pid" 2>/dev/null || true
python3 - "$OUT" "$data" <<'PY'
import json, pathlib, sys
out, data = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
def report(name):
    lines = [l for l in open(out / f"run-{name}.json") if l.startswith("{")]
    return json.loads(lines[-1]) if lines else {}
plain, rec = report("bench-plain"), report("bench-rec")
files = [f for f in (data / "recordings" / "bench-rec").glob("*.mk*")]
size = sum(f.stat().st_size for f in files) / 1e6
print("| 10 x 720p+audio publishers to 10 subscribers, one server core | server CPU (cores) | loss % | recorded |")
print("|---|---|---|---|")
for name, r, what in (("not recorded", plain, "-"), ("recorded", rec, f"{len(files)} files, {size:.0f} MB")):
    loss = r.get("loss")
    loss = "-" if loss is None else f"{loss * 100:.2f}"
    cpu = r.get("server_cpu_cores")
    cpu = "-" if cpu is None else f"{cpu:.3f}"
    print(f"| {name} | {cpu} | {loss} | {what} |")
a, b = plain.get("server_cpu_cores"), rec.get("server_cpu_cores")
if a is not None and b is not None:
    print(f"| recording's cost | {b - a:+.3f} cores ({(b - a) * 100:+.1f}% of a core) | | |")
PY
NS
