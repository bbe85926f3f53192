#!/bin/bash
# Builds the Debian packages with cargo-deb and prints their paths, a line each: the daemon's,
# <target dir>/debian/gns3-qemud_<version>-1_<arch>.deb, then the client's,
# <target dir>/debian/gns3-qemuctl_<version>-1_<arch>.deb, then the GNS3 compute's
# (gns3-qemud-compute_...), where the target dir is
# $CARGO_TARGET_DIR if set, else the project's target/. The daemon package's contents,
# dependencies and maintainer scripts are in Cargo.toml, [package.metadata.deb], and
# packaging/debian/; the client's in src/ctl/Cargo.toml, [package.metadata.deb], and
# packaging/gns3-qemuctl/. tests/debs.sh checks what they hold.
#
#   packaging/build-deb.sh [cargo-deb options...]
#
# DEBEMAIL (and DEBFULLNAME) set the package's Maintainer field.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# dpkg-shlibdeps (dpkg-dev) works out the shared-library dependencies ($auto).
missing=()
command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev)
command -v gzip >/dev/null || missing+=(gzip)
if [ ${#missing[@]} -gt 0 ]; then
	echo "build-deb: installing ${missing[*]}" >&2
	as_root apt-get update -qq
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

if ! cargo deb --version >/dev/null 2>&1; then
	echo "build-deb: installing cargo-deb" >&2
	cargo install cargo-deb --locked
fi

maintainer=()
if [ -n "${DEBEMAIL:-}" ]; then
	maintainer=(--maintainer "${DEBFULLNAME:-gns3-qemud packager} <$DEBEMAIL>")
fi

# cargo-deb builds the release binaries (strips them), gzips the man pages, and writes
# the .deb; its last line of output is the package's path. The supervisor is another
# package of the workspace: cargo-deb sees that its asset (target/release/...) is that
# package's binary and builds with --workspace --bin=gns3-qemud --bin=gns3-qemud-supervisor.
deb=$(cargo deb --locked "${maintainer[@]}" "$@" | tail -n 1)
# The client, a package of its own (no daemon, no dbus-daemon: only what its binary links).
ctl=$(cargo deb --locked -p gns3-qemuctl "${maintainer[@]}" "$@" | tail -n 1)
# The GNS3 compute, a package of its own that depends on the daemon's
# (src/compute/Cargo.toml, [package.metadata.deb]; packaging/gns3-qemud-compute/).
compute=$(cargo deb --locked -p gns3-qemud-compute "${maintainer[@]}" "$@" | tail -n 1)
echo "$deb"
echo "$ctl"
echo "$compute"
