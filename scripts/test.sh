#!/usr/bin/env bash
# Runs every Switchyard test on a fresh machine (Debian 12, as root).
#
# Installs only what is missing: Debian packages (Chromium for the browser tests, iproute2 and
# util-linux for private network namespaces, iptables for the NAT routers and firewalls of
# tests/relay.rs, Node.js for Playwright, Janus for tests/janus,
# Redis for the cluster tests, started on 127.0.0.1:6379 unless one answers there, coturn as
# the STUN server for public-IP detection, PostgreSQL for the configuration store's tests, a
# throwaway cluster with trust authentication started on 127.0.0.1:5432 unless one answers
# there, with a database `test`, systemd for systemd-analyze and binutils for readelf, which
# tests/deploy.rs and scripts/deb.sh use, ffmpeg for ffprobe on recordings),
# cargo-nextest and cargo-fuzz, playwright-core (tests/browser, never a browser download), and
# a Python venv at .venv with aiortc and moto (an S3 emulator). Then builds the workspace once,
# checks formatting and lints, runs all tests with cargo-nextest (each end-to-end test in its
# own network namespace), and runs each fuzz target for a short while.
#
# Environment: SWITCHYARD_SKIP_FUZZ=1 skips fuzzing; FUZZ_SECONDS (default 15) per target.
# Extra arguments go to `cargo nextest run` (e.g. a test filter).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
started=$SECONDS

step() { printf '\n==> [%3ds] %s\n' $((SECONDS - started)) "$*"; }

# nasm makes openh264 ~3x faster; libvpx-dev and libopus-dev are the MCU's VP8 and Opus libraries;
# ffmpeg (ffprobe) is the oracle that checks recordings; sip-tester (sipp), baresip and sox are
# the SIP connector's test phones and audio tools (tests/sip/README.md).
APT_PACKAGES=(chromium iproute2 util-linux iptables curl nodejs npm janus redis-server coturn postgresql systemd binutils
  nasm cmake pkg-config libvpx-dev libopus-dev ffmpeg rabbitmq-server sip-tester baresip sox)

step "system packages"
missing=()
for p in "${APT_PACKAGES[@]}"; do
  # A command already on PATH (e.g. a newer Node.js) counts as installed.
  case $p in
    nodejs) command -v node >/dev/null && continue ;;
    npm) command -v npm >/dev/null && continue ;;
    redis-server) command -v redis-server >/dev/null && continue ;;
    # Either a server answers already, or Debian's server binaries are there to start one.
    postgresql)
      command -v psql >/dev/null && command -v pg_isready >/dev/null &&
        { pg_isready -q -h 127.0.0.1 -p 5432 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; } &&
        continue ;;
  esac
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "all present"
fi

step "Redis on 127.0.0.1:6379"
if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "running"
else
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' >/dev/null
  for _ in {1..50}; do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -h 127.0.0.1 -p 6379 ping
fi

step "PostgreSQL on 127.0.0.1:5432"
if pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "running"
else
  pgbin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  pgdata=$(mktemp -d /tmp/switchyard-postgres.XXXXXX)
  # initdb and postgres refuse to run as root; Debian's package made the postgres user.
  as=()
  if ((EUID == 0)); then
    chown postgres: "$pgdata"
    as=(runuser -u postgres --)
  fi
  "${as[@]}" "$pgbin/initdb" -D "$pgdata" -U postgres --auth=trust >/dev/null
  "${as[@]}" "$pgbin/pg_ctl" -D "$pgdata" -l "$pgdata/log" -w start \
    -o "-c listen_addresses=127.0.0.1 -p 5432 -k $pgdata" >/dev/null
  pg_isready -h 127.0.0.1 -p 5432
fi
if [[ -z $(psql -h 127.0.0.1 -p 5432 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'") ]]; then
  psql -h 127.0.0.1 -p 5432 -U postgres -qc 'CREATE DATABASE test'
fi

step "cargo tools"
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
if [[ -z ${SWITCHYARD_SKIP_FUZZ:-} ]] && ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi

step "playwright-core (tests/browser)"
if [[ ! -d tests/browser/node_modules/playwright-core ]] || [[ tests/browser/package-lock.json -nt tests/browser/node_modules ]]; then
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error && touch node_modules)
else
  echo "up to date"
fi

step "Python venv with aiortc and moto, the S3 emulator (.venv)"
if ! .venv/bin/python - <<'PY' 2>/dev/null; then
import importlib.metadata, sys
wanted = dict(l.strip().split("==") for l in open("tests/aiortc/requirements.txt") if "==" in l)
sys.exit(any(importlib.metadata.version(p.split("[")[0]) != v for p, v in wanted.items()))
PY
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/aiortc/requirements.txt
else
  echo "up to date"
fi

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
export SWITCHYARD_BIN=$TARGET/debug/switchyard
export SWITCHYARD_PYTHON=$ROOT/.venv/bin/python
export SWITCHYARD_EXPECT_URING=${SWITCHYARD_EXPECT_URING:-}

step "format"
cargo fmt --all -- --check

step "build (once, for every test)"
cargo build --workspace --all-targets --locked

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
cargo nextest run --workspace --locked "$@"

if [[ -z ${SWITCHYARD_SKIP_FUZZ:-} ]]; then
  seconds=${FUZZ_SECONDS:-15}
  # Each crate's fuzz targets, as crate/target: the data plane's protocol parsers, the codec
  # crate's RTP depacketizers, the recorder's H264 conversion and Matroska writer, the reader
  # of recorded files, the monitor's reader of logs, and the SIP connector's offer/answer.
  for entry in dataplane/{stun,rtp,rtcp,sdp,turn,framing,twcc,dd} codec/depacketize codec/phone recording/record recording/read recording/log sip/answer; do
    crate=${entry%/*} target=${entry#*/}
    step "fuzz $target for ${seconds}s"
    # cargo fuzz needs nightly-only sanitizer flags; RUSTC_BOOTSTRAP lets the stable compiler
    # accept them. Every crate's fuzz build shares $TARGET/fuzz, apart from the main build (other
    # flags): what they have in common (aws-lc, libopus, openh264, the data plane) builds once.
    # A dev build at opt-level 1 builds in about half the time of cargo fuzz's release build and
    # runs most targets at a third to all of its speed (opt-level 0 ran 10-80x fewer inputs).
    (cd "$crate/fuzz" && env -u CARGO_TARGET_DIR RUSTC_BOOTSTRAP=1 CARGO_PROFILE_DEV_OPT_LEVEL=1 \
      cargo fuzz run --dev --target-dir "$TARGET/fuzz" "$target" \
      -- -max_total_time="$seconds" -rss_limit_mb=2048 2>&1 | tail -n 3)
  done
fi

step "all tests passed"
