#!/bin/bash
# The README's test command on a machine that has never seen the project: a pristine
# Debian 12 root, like the image CI runs on, with a clean clone of this repository's HEAD.
# Run it before resolving any change to install steps, packages, users or caches: CI runs
# on a machine where earlier work already installed and created things, so it cannot tell.
#   - The root: debootstrap minbase of bookworm with ca-certificates, plus qemu-utils from
#     bookworm-backports as the CI image ships it (tests/debian-root.sh caches it in
#     $FRESH_CACHE/<hash of what it holds>). Each run works on a copy, so the cache stays
#     pristine.
#   - The host's Rust toolchain (the active rustup toolchain's directory, or the directory
#     of `cargo`) is bind-mounted read-only on /opt/rust; CARGO_HOME is the root's own, so
#     the registry, cargo-fuzz and cargo-deb are fetched as on a new machine.
#   - The host's local certificate authorities (/usr/local/share/ca-certificates) are copied
#     in, as every machine here has them.
#   - Inside, under systemd-nspawn as root with CI=true: `bash .ci/run`, the test command.
#     The nested tests/e2e.sh is skipped (E2E_SKIP), saying so: it boots a container of its
#     own, which cannot nest in this one. It runs on the host as part of the test command.
# Prints every line of the run, then its total time; the exit status is the test command's.
#   sudo tests/fresh-machine.sh
# Environment: FRESH_CACHE (default /var/cache/gns3-qemud-fresh), FRESH_KEEP=1 keeps the
# work directory (the root's copy, with the clone and its target/), E2E_MIRROR as for e2e.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO" || exit 1
T0=$(date +%s)
elapsed() {
	local s=$(($(date +%s) - T0))
	printf '%dm%02ds' $((s / 60)) $((s % 60))
}
die() {
	echo "fresh-machine: FAIL: $*" >&2
	exit 1
}

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, systemd-nspawn): sudo $0"

# shellcheck source=tests/packages.sh
. tests/packages.sh
need systemd-nspawn systemd-container
need debootstrap debootstrap
need git git
need_pkg debian-archive-keyring
install_missing || die "cannot install the host tools above"

# --- the toolchain -------------------------------------------------------------------------
CARGO=$(command -v cargo) || die "cargo is missing on the host: install Rust with rustup"
TOOLCHAIN=
if command -v rustup >/dev/null && TOOLCHAIN=$(rustup which cargo 2>/dev/null); then
	TOOLCHAIN=$(dirname "$(dirname "$TOOLCHAIN")")
else
	TOOLCHAIN=$(dirname "$(dirname "$(realpath "$CARGO")")")
fi
for t in cargo rustc cargo-clippy cargo-fmt; do
	[ -x "$TOOLCHAIN/bin/$t" ] || die "the host's toolchain ($TOOLCHAIN) has no bin/$t"
done
echo "== toolchain: $TOOLCHAIN ($("$TOOLCHAIN/bin/rustc" --version))"

# --- the root ------------------------------------------------------------------------------
SUITE=bookworm
INCLUDE=ca-certificates
# What a Debian 12 machine has beyond debootstrap's minbase (an /etc/hosts that names
# localhost), and what the CI image adds that matters here: qemu-utils 10.0 from backports
# (newer than, and incompatible with, bookworm's qemu-system-x86). The backports source is
# removed again, as on the image. (debian_root calls it by name.)
# shellcheck disable=SC2317
ci_image_extras() {
	local root=$1 mirror
	printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
	mirror=$(debian_mirror "$SUITE")
	echo "deb $mirror $SUITE-backports main" >"$root/etc/apt/sources.list.d/backports.list"
	in_root() { systemd-nspawn -q -D "$root" --register=no --keep-unit --setenv=DEBIAN_FRONTEND=noninteractive "$@"; }
	in_root apt-get update -q &&
		in_root apt-get install -y -q --no-install-recommends -t "$SUITE-backports" qemu-utils || return 1
	rm "$root/etc/apt/sources.list.d/backports.list"
	in_root apt-get update -q
}
# shellcheck source=tests/debian-root.sh
. tests/debian-root.sh
CACHE=${FRESH_CACHE:-/var/cache/gns3-qemud-fresh}
ROOT=$(debian_root "$CACHE" "$SUITE" "$INCLUDE" ci_image_extras) && [ -n "$ROOT" ] ||
	die "cannot make the $SUITE root (above)"

WORK=$(mktemp -d /var/tmp/gns3-qemud-fresh.XXXXXX)
cleanup() {
	local rc=$?
	if [ "${FRESH_KEEP:-0}" = 1 ]; then
		echo "fresh-machine: kept $WORK"
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
echo "== copying the root to $WORK/root"
cp -a "$ROOT" "$WORK/root" || die "cannot copy $ROOT"
# The machine's own trust, as every machine of this kind has it: the local CAs (a TLS proxy's,
# say) and the bundle made with them. Nothing of the project's.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
	cp /usr/local/share/ca-certificates/*.crt "$WORK/root/usr/local/share/ca-certificates/"
	cp /etc/ssl/certs/ca-certificates.crt "$WORK/root/etc/ssl/certs/ca-certificates.crt"
fi
echo "== clean clone of $(git rev-parse --short HEAD) into /src"
git clone -q --no-hardlinks "$REPO" "$WORK/root/src" || die "git clone failed"
[ -z "$(git status --porcelain --untracked-files=no)" ] ||
	echo "   (uncommitted changes of the checkout are not in the clone)"

# --- the run -------------------------------------------------------------------------------
echo "== bash .ci/run in the fresh root (CI=true)"
systemd-nspawn -D "$WORK/root" --register=no --keep-unit --quiet \
	--machine="gns3-qemud-fresh-$$" \
	--bind-ro="$TOOLCHAIN:/opt/rust" \
	--capability=all --as-pid2 \
	--setenv=CI=true \
	--setenv=PATH=/opt/rust/bin:/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	--setenv=CARGO_HOME=/root/.cargo \
	--setenv=HOME=/root \
	--setenv=E2E_SKIP="tests/fresh-machine.sh runs the test command inside a container, where tests/e2e.sh cannot boot its own; it runs on the host" \
	--chdir=/src \
	bash .ci/run
rc=$?
echo "== fresh-machine: the test command exited $rc after $(elapsed) in all"
exit "$rc"
