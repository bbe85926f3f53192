#!/bin/bash
# Runs every test of gns3-qemud on a Debian 12 machine, as root: installs what the tests
# need with apt, checks formatting and lints, then runs the unit and integration tests
# (real dbus-daemon, real QEMU guests under TCG).
#   sudo tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=tests/packages.sh
. tests/packages.sh
need qemu-system-x86_64 qemu-system-x86
need qemu-img qemu-utils
need dbus-daemon dbus-daemon
need busctl systemd
need gdbus libglib2.0-bin
need_pkg python3-gi # tests/applet: GLib's GDBusObjectManagerClient, as applets use it
need_pkg gir1.2-glib-2.0
need cpulimit cpulimit # CPU limits where no cgroup has the cpu controller
need cc gcc # rustc links through cc
need c++ g++ # tests/fuzz.sh: libfuzzer-sys compiles libFuzzer (C++)
need_pkg libc6-dev
need_pkg ovmf # tests/machine_firmware.rs: UEFI guests (Firmware uefi)
need swtpm swtpm # tests/machine_firmware.rs: a TPM per VM (Tpm)
need_pkg swtpm-tools
need tshark tshark # tests/capture.rs: the captures, read back as Wireshark would
need_pkg python3-venv # tests/common/gns3.rs: a venv for the GNS3 controller (gns3-server from PyPI)
need ip iproute2 # tests/gns3_two_hosts.rs: two hosts as network namespaces and a veth pair
install_missing
command -v cargo >/dev/null || {
  echo "cargo is missing: install Rust with rustup (https://rustup.rs)" >&2
  exit 1
}

# section NAME: ends the section before (its time printed) and starts NAME. CI's limit is on
# the whole run; these say where it goes.
section_name= section_start=$SECONDS
section() {
	[ -n "$section_name" ] && echo "== $section_name: $((SECONDS - section_start)) s"
	section_name=$1 section_start=$SECONDS
	[ -n "$1" ] && echo "== $1"
	return 0
}

section "test guest"
tests/guest/build.sh >/dev/null

# Every package: the daemon, the supervisor and gns3-qemuctl (src/supervisor/ and src/ctl/,
# packages of their own, with their own tests).
section "cargo fmt --check"
cargo fmt --all --check
section "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
section "cargo test"
tests/cargo-test.sh # its binaries two at a time, with what they print (figures, the mechanism checked)
cargo test --workspace --locked --doc
section "fuzz (short)"
tests/fuzz.sh
section "the package on a real systemd (tests/e2e.sh)"
tests/e2e.sh
section ""
echo "== all tests passed in $SECONDS s"
