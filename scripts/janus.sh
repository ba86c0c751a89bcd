#!/usr/bin/env bash
# Starts Janus (Debian package `janus`, 1.1.x) for tests and benchmarks, on loopback only.
#
# Run it inside a private network namespace (`unshare -n ...`, or a test after
# tests/support/netns.rs `enter()`): it refuses to run in the host's namespace, because it
# adds an interface. Janus skips loopback interfaces when it gathers ICE candidates, so the
# script gives it a veth pair whose veth0 holds 127.0.0.2/32 (docs: /work/shared/brief/peers.md);
# its only candidate is then 127.0.0.2. Clients must bind their UDP sockets to 127.0.0.2 too:
# libnice's sockets on veth0 cannot send to 127.0.0.1 (on lo; sendmsg fails with EINVAL), so
# a client on 127.0.0.1 reaches Janus but never hears back and ICE fails.
#
# Usage: scripts/janus.sh [CONFIG_DIR]
#   CONFIG_DIR  where the configuration and janus.log go (default: a fresh temporary directory)
# Environment:
#   JANUS_CPUS        run Janus under `taskset -c $JANUS_CPUS` (e.g. "2" or "2-3")
#   JANUS_DEBUG_LEVEL Janus's log level 0-7 (default 4, info)
#   JANUS_NICE_DEBUG  "true" for libnice's debug output in CONFIG_DIR/janus.stdout (with
#                     G_MESSAGES_DEBUG=all); it shows every connectivity check
#   JANUS_BIN         the janus binary (default: janus on PATH)
#
# Configuration: only the HTTP transport (http://127.0.0.1:8088/janus, no admin API), the
# videoroom plugin and AudioBridge (rooms made by the load generator), no event handlers or
# external loggers, no STUN server, full ICE (not lite) with half-trickle (Janus puts its
# candidates in its SDP), and a videoroom room 1234 for 1000 publishers with no bitrate cap
# (REMB is not limited, so 1.5 Mbps video is not throttled).
#
# Prints Janus's PID on stdout once its HTTP API answers; Janus keeps running in the
# background (stop it with `kill PID`). Progress and errors go to stderr.
set -euo pipefail

die() {
  echo "janus.sh: $*" >&2
  exit 1
}

command -v ip >/dev/null || die "ip (iproute2) is missing"
JANUS_BIN=${JANUS_BIN:-$(command -v janus || true)}
[[ -n $JANUS_BIN ]] || die "janus is not installed: apt-get install -y janus (scripts/test.sh does)"

# The host namespace has interfaces other than lo and veth0/veth1: refuse to touch it.
for dev in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1); do
  case $dev in
    lo | veth0 | veth1) ;;
    *) die "interface $dev exists: run this inside a private network namespace (unshare -n)" ;;
  esac
done

ip link set lo up
if ! ip link show veth0 >/dev/null 2>&1; then
  ip link add veth0 type veth peer name veth1
  sysctl -qw net.ipv6.conf.veth0.disable_ipv6=1 net.ipv6.conf.veth1.disable_ipv6=1 2>/dev/null || true
fi
ip -4 addr show dev veth0 | grep -q ' 127\.0\.0\.2/32' || ip addr add 127.0.0.2/32 dev veth0
ip link set veth0 up
ip link set veth1 up

CFG=${1:-$(mktemp -d -t janus.XXXXXX)}
mkdir -p "$CFG"
CFG=$(cd "$CFG" && pwd)

# Janus loads every *.so in its plugin and transport folders: give it folders that hold only
# the two modules we want, so nothing else starts (and no disable list can fall out of date).
LIBDIR=
for d in /usr/lib/*/janus /usr/lib/janus /usr/local/lib/janus /opt/janus/lib/janus; do
  [[ -e $d/plugins/libjanus_videoroom.so ]] && LIBDIR=$d && break
done
[[ -n $LIBDIR && -e $LIBDIR/transports/libjanus_http.so ]] || die "the Janus videoroom plugin or HTTP transport is missing"
mkdir -p "$CFG/plugins" "$CFG/transports" "$CFG/events" "$CFG/loggers"
ln -sf "$LIBDIR/plugins/libjanus_videoroom.so" "$CFG/plugins/libjanus_videoroom.so"
ln -sf "$LIBDIR/transports/libjanus_http.so" "$CFG/transports/libjanus_http.so"
# AudioBridge, for the MCU comparison (`loadtest capacity --mode mcu --compare-janus`).
if [[ -e $LIBDIR/plugins/libjanus_audiobridge.so ]]; then
  ln -sf "$LIBDIR/plugins/libjanus_audiobridge.so" "$CFG/plugins/libjanus_audiobridge.so"
fi

cat >"$CFG/janus.jcfg" <<EOF
general: {
	configs_folder = "$CFG"
	plugins_folder = "$CFG/plugins"
	transports_folder = "$CFG/transports"
	events_folder = "$CFG/events"
	loggers_folder = "$CFG/loggers"
	debug_level = ${JANUS_DEBUG_LEVEL:-4}
	debug_timestamps = true
	session_timeout = 60
	server_name = "switchyard-janus"
	protected_folders = [ "/bin", "/boot", "/dev", "/etc", "/lib", "/proc", "/sbin", "/sys", "/usr", "/var" ]
}
certificates: {
}
media: {
	ipv6 = false
	dtls_mtu = 1200
	no_media_timer = 1
}
nat: {
	nice_debug = ${JANUS_NICE_DEBUG:-false}
	full_trickle = false
	ice_lite = false
	ice_tcp = false
	ignore_mdns = true
	ice_enforce_list = "veth0"
}
plugins: {
}
transports: {
}
loggers: {
}
events: {
	broadcast = false
}
EOF

cat >"$CFG/janus.transport.http.jcfg" <<'EOF'
general: {
	json = "plain"
	base_path = "/janus"
	http = true
	port = 8088
	ip = "127.0.0.1"
	https = false
}
admin: {
	admin_http = false
	admin_https = false
}
cors: {
}
EOF

cat >"$CFG/janus.plugin.videoroom.jcfg" <<'EOF'
general: {
}
room-1234: {
	description = "switchyard load test"
	publishers = 1000
	bitrate = 0
	fir_freq = 0
	audiocodec = "opus"
	videocodec = "vp8,h264"
	record = false
}
EOF

cat >"$CFG/janus.plugin.audiobridge.jcfg" <<'EOF'
general: {
}
EOF

LOG=$CFG/janus.log
launch=("$JANUS_BIN" -F "$CFG" -C "$CFG/janus.jcfg" -N -o -L "$LOG")
if [[ -n ${JANUS_CPUS:-} ]]; then
  launch=(taskset -c "$JANUS_CPUS" "${launch[@]}")
fi
# Janus writes its log to $LOG too; stdout/stderr catch anything printed before it opens it.
"${launch[@]}" >"$CFG/janus.stdout" 2>&1 </dev/null &
pid=$!

info='{"janus":"info","transaction":"ready"}'
for _ in $(seq 1 200); do
  if ! kill -0 "$pid" 2>/dev/null; then
    tail -n 30 "$LOG" "$CFG/janus.stdout" >&2 2>/dev/null || true
    die "janus exited during start (log: $LOG)"
  fi
  if curl -fsS --max-time 1 -H 'Content-Type: application/json' -d "$info" \
    http://127.0.0.1:8088/janus 2>/dev/null | grep -q '"server_info"'; then
    echo "janus.sh: Janus $pid answers on http://127.0.0.1:8088/janus (config and log in $CFG)" >&2
    echo "$pid"
    exit 0
  fi
  sleep 0.1
done
kill "$pid" 2>/dev/null || true
tail -n 30 "$LOG" >&2 2>/dev/null || true
die "Janus did not answer on http://127.0.0.1:8088/janus within 20 s (log: $LOG)"
