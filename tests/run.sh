#!/bin/bash
# Runs every test of gns3-qemud on a Debian 12 machine, as root: installs what the tests
# need with apt, checks formatting and lints, then runs the unit and integration tests
# (real dbus-daemon, real QEMU guests under TCG).
#   sudo tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v dbus-daemon >/dev/null || need+=(dbus-daemon)
command -v busctl >/dev/null || need+=(systemd)
command -v gdbus >/dev/null || need+=(libglib2.0-bin)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  apt-get update -q
  # No recommends: they pull qemu-block-extra, which replaces a newer qemu-utils with its own.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi
command -v cargo >/dev/null || {
  echo "cargo is missing: install Rust with rustup (https://rustup.rs)" >&2
  exit 1
}

echo "== test guest"
tests/guest/build.sh >/dev/null

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --locked
echo "== all tests passed"
