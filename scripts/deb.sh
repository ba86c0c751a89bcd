#!/usr/bin/env bash
# Builds a Debian package of Switchyard with plain dpkg-deb: /usr/bin/switchyard, a systemd
# unit per role in /lib/systemd/system, their environment files in /etc/switchyard (conffiles,
# so dpkg keeps an operator's edits across upgrades), and the copyright, README and an example
# drop-in in /usr/share/doc/switchyard.
#
# Usage: scripts/deb.sh [--out DIR] [--compression xz|gzip|zstd|none] [BINARY]
#   BINARY         the switchyard binary to package; default target/release/switchyard,
#                  built with `cargo build --release -p switchyard` when it is missing
#   --out DIR      where the .deb goes (default target/debian)
#   --compression  dpkg-deb's -Z (default xz, Debian's own; none makes a quick test build)
# Environment: DEB_MAINTAINER overrides the Maintainer field.
# The last line of output is the path of the .deb.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

die() {
  echo "deb.sh: $*" >&2
  exit 1
}

out=$ROOT/target/debian
compression=xz
bin=
while (($#)); do
  case $1 in
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --compression) compression=${2:?--compression needs a type}; shift 2 ;;
    -h | --help) sed -n '2,13s/^# \{0,1\}//p' "$0"; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [[ -z $bin ]] || die "one binary only"; bin=$1; shift ;;
  esac
done

for tool in dpkg-deb readelf od; do
  command -v "$tool" >/dev/null || die "$tool is missing (Debian packages dpkg, binutils, coreutils)"
done

if [[ -z $bin ]]; then
  bin=target/release/switchyard
  if [[ ! -x $bin ]]; then
    echo "deb.sh: $bin is missing; building it" >&2
    cargo build --release --locked -p switchyard
  fi
fi
[[ -f $bin && -x $bin ]] || die "$bin is not an executable file"

# The version of the workspace ([workspace.package] in Cargo.toml). A semver pre-release
# (1.0.0-rc.1) becomes 1.0.0~rc.1, which dpkg orders before 1.0.0 as semver does.
version=$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml)
[[ -n $version ]] || die "no version in [workspace.package] of Cargo.toml"
deb_version=${version//-/\~}

# The architecture is the binary's own (ELF e_machine), not this host's: a cross-built binary
# is packaged for where it runs.
[[ $(od -An -tx1 -N4 "$bin" | tr -d ' \n') == 7f454c46 ]] || die "$bin is not an ELF file"
case $(od -An -tx1 -j18 -N2 "$bin" | tr -d ' \n') in
  3e00) arch=amd64 ;;
  b700) arch=arm64 ;;
  *) die "$bin is for an architecture this script does not know" ;;
esac
if [[ $arch == "$(dpkg --print-architecture)" ]]; then
  # A binary left from another checkout or an older build would be packaged under the wrong
  # version: the two must agree.
  reported=$("$bin" --version) || die "$bin --version failed"
  [[ $reported == "switchyard $version" ]] ||
    die "$bin says \"$reported\", the workspace is at $version: rebuild it"
fi

# Depends, from the shared libraries the binary links (Rust links everything else in): glibc
# at least at the newest symbol version it uses, and libgcc's unwinder.
depends=(adduser)
needs_libc=
while read -r lib; do
  case $lib in
    libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1 | ld-linux*) needs_libc=1 ;;
    libgcc_s.so.1) depends+=(libgcc-s1) ;;
    # The MCU's codecs: OpenH264 is C++ (built in, its runtime is not), VP8 and Opus are the
    # system's libraries.
    libstdc++.so.6) depends+=(libstdc++6) ;;
    libvpx.so.*) depends+=("libvpx${lib#libvpx.so.}") ;;
    libopus.so.0) depends+=(libopus0) ;;
    *) die "$bin links $lib: add the Debian package that has it to Depends in scripts/deb.sh" ;;
  esac
done < <(readelf -dW "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
if [[ -n $needs_libc ]]; then
  glibc=$(readelf -VW "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
  depends+=("libc6${glibc:+ (>= $glibc)}")
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pkg=$work/switchyard
umask 022

install -D -m 0755 "$bin" "$pkg/usr/bin/switchyard"
units=(switchyard-all-in-one.service switchyard-gateway.service switchyard-media-server.service)
for unit in "${units[@]}"; do
  install -D -m 0644 "deploy/systemd/$unit" "$pkg/lib/systemd/system/$unit"
done
# Root-only: systemd reads them as root, and they hold connection strings and secrets.
conffiles=()
for env in all-in-one gateway media-server; do
  install -D -m 0600 "deploy/env/$env.env" "$pkg/etc/switchyard/$env.env"
  conffiles+=("/etc/switchyard/$env.env")
done
doc=$pkg/usr/share/doc/switchyard
install -D -m 0644 README.md "$doc/README.md"
install -D -m 0644 deploy/systemd/bind-privileged-ports.conf "$doc/examples/bind-privileged-ports.conf"
cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: switchyard
Source: https://github.com/switchyard-media/switchyard

Files: *
Copyright: The Switchyard contributors
License: Apache-2.0
 On Debian systems the full text of the Apache License, Version 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
Comment: /usr/bin/switchyard also contains the Rust crates listed in the source's
 Cargo.lock, each under its own license.
EOF
chmod 0644 "$doc/copyright"

mkdir -p "$pkg/DEBIAN"
printf '%s\n' "${conffiles[@]}" >"$pkg/DEBIAN/conffiles"
depends_field=$(printf '%s, ' "${depends[@]}")
cat >"$pkg/DEBIAN/control" <<EOF
Package: switchyard
Version: $deb_version
Architecture: $arch
Maintainer: ${DEB_MAINTAINER:-Switchyard maintainers <maintainers@switchyard.invalid>}
Installed-Size: $(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
Depends: ${depends_field%, }
Section: net
Priority: optional
Homepage: https://github.com/switchyard-media/switchyard
Description: WebRTC media server (SFU) with signalling, WHIP and WHEP
 Switchyard forwards audio and video between browsers and WHIP/WHEP clients,
 as one all-in-one process or as a cluster of gateways and media servers on
 Redis and PostgreSQL.
 .
 This package installs the switchyard binary and a systemd unit per role
 (switchyard-all-in-one, switchyard-gateway, switchyard-media-server), none of
 them enabled; their settings are in /etc/switchyard/<role>.env.
EOF

# Maintainer scripts: the service user, and systemd's view of the unit files. Units are neither
# enabled nor restarted here: which role a host runs is the operator's choice, and restarting a
# media server drains it (up to its drain timeout).
cat >"$pkg/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    # The units' User=; it owns only /var/lib/switchyard, which systemd creates.
    if ! getent passwd switchyard >/dev/null; then
        adduser --system --group --quiet --home /var/lib/switchyard --no-create-home switchyard
    fi
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null || true
    fi
fi
exit 0
EOF
cat >"$pkg/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
# On removal, stop what runs before its binary goes; an upgrade leaves running servers on the
# old binary until the operator restarts them.
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop switchyard-all-in-one.service switchyard-gateway.service \
        switchyard-media-server.service >/dev/null || true
fi
exit 0
EOF
cat >"$pkg/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
    # The configuration database and generated secrets go with the package; the user stays, as
    # Debian leaves system users (files elsewhere may still be owned by it).
    rm -rf /var/lib/switchyard
    rm -f /etc/systemd/system/multi-user.target.wants/switchyard-all-in-one.service \
        /etc/systemd/system/multi-user.target.wants/switchyard-gateway.service \
        /etc/systemd/system/multi-user.target.wants/switchyard-media-server.service
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null || true
fi
exit 0
EOF
chmod 0755 "$pkg/DEBIAN/postinst" "$pkg/DEBIAN/prerm" "$pkg/DEBIAN/postrm"

mkdir -p "$out"
deb=$out/switchyard_${deb_version}_${arch}.deb
# --root-owner-group: every file root-owned in the package without fakeroot.
dpkg-deb --root-owner-group -Z"$compression" --build "$pkg" "$deb" >/dev/null
echo "$deb"
