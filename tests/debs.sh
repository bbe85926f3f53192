#!/bin/bash
# Checks the three Debian packages as built, without installing them: the client's
# (gns3-qemuctl) exact file list and modes, its metadata (nothing of the daemon's, no
# dbus-daemon: only what its binary links), that its man page renders without a warning,
# that its completion hooks are what bash, zsh and fish load, and that the daemon's package
# recommends it and does not ship it, and that an upgrade never stops or restarts
# gns3-qemud-guests.service (which would stop every VM); the GNS3 compute's file list, its
# dependency on the daemon, its conffile, man page and unit (enabled and started on
# install). tests/e2e.sh runs it on the packages it installs.
#   tests/debs.sh [DAEMON.deb CLIENT.deb COMPUTE.deb]   (without them: builds them, packaging/build-deb.sh)
# Every check prints PASS or FAIL (with its output); the exit status is non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

# shellcheck source=tests/packages.sh
. tests/packages.sh
need dpkg-deb dpkg
need groff groff-base # the man page is rendered as man(1) does, warnings on
need bash bash
install_missing || {
	echo "debs: FAIL: cannot install the tools above"
	exit 1
}

if [ $# -eq 3 ]; then
	DEB=$1 CTL=$2 COMPUTE=$3
elif [ $# -eq 0 ]; then
	mapfile -t built < <(packaging/build-deb.sh | tail -n 3)
	DEB=${built[0]:-} CTL=${built[1]:-} COMPUTE=${built[2]:-}
else
	echo "usage: tests/debs.sh [DAEMON.deb CLIENT.deb COMPUTE.deb]" >&2
	exit 2
fi
for f in "$DEB" "$CTL" "$COMPUTE"; do
	[ -f "$f" ] || {
		echo "debs: FAIL: no package at '$f'"
		exit 1
	}
done

pass=0
fail=0
# dcheck NAME COMMAND...: PASS if COMMAND succeeds, else FAIL with its output.
dcheck() {
	local name=$1 out rc
	shift
	out=$("$@" 2>&1)
	rc=$?
	if [ $rc -eq 0 ]; then
		echo "PASS $name"
		pass=$((pass + 1))
	else
		echo "FAIL $name (exit $rc)"
		[ -n "$out" ] && echo "$out" | tail -n 40 | sed 's/^/    /'
		fail=$((fail + 1))
	fi
}
field() { dpkg-deb -f "$1" "$2"; }
WORK=$(mktemp -d /tmp/gns3-qemud-debs.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
dpkg-deb -x "$CTL" "$WORK/ctl"
dpkg-deb -x "$COMPUTE" "$WORK/compute"

# The client's files, a line each as "MODE PATH" (directories left out).
files() { dpkg-deb -c "$1" | awk '$1 !~ /^d/ {sub(/^\./, "", $6); print $1, $6}' | sort -k2; }
expected_files() {
	sort -k2 <<-'EOF'
		-rwxr-xr-x /usr/bin/gns3-qemuctl
		-rw-r--r-- /usr/share/bash-completion/completions/gns3-qemuctl
		-rw-r--r-- /usr/share/doc/gns3-qemuctl/changelog.Debian.gz
		-rw-r--r-- /usr/share/doc/gns3-qemuctl/copyright
		-rw-r--r-- /usr/share/doc/gns3-qemuctl/examples/external-udp.yml
		-rw-r--r-- /usr/share/doc/gns3-qemuctl/examples/triangle.yml
		-rw-r--r-- /usr/share/doc/gns3-qemuctl/examples/two-routers.yml
		-rw-r--r-- /usr/share/fish/vendor_completions.d/gns3-qemuctl.fish
		-rw-r--r-- /usr/share/gns3-qemuctl/lab.schema.json
		-rw-r--r-- /usr/share/man/man1/gns3-qemuctl.1.gz
		-rw-r--r-- /usr/share/zsh/vendor-completions/_gns3-qemuctl
	EOF
}
dcheck ctl-files diff <(expected_files) <(files "$CTL")

name_version() {
	[ "$(field "$CTL" Package)" = gns3-qemuctl ] && [ "$(field "$CTL" Version)" = "$(field "$DEB" Version)" ]
}
dcheck ctl-name-version name_version
# $auto gives only the C library (the binary links nothing else: zbus speaks D-Bus itself).
only_libc() {
	field "$CTL" Depends | tee /dev/stderr | grep -qxE 'libc6 \(>= [0-9.]+\)' &&
		[ -z "$(field "$CTL" Pre-Depends)$(field "$CTL" Recommends)" ]
}
dcheck ctl-depends-only-libc only_libc
nothing_of_the_daemon() { ! dpkg-deb -f "$CTL" Depends Pre-Depends Recommends | grep -E 'gns3-qemud|dbus'; }
dcheck ctl-nothing-of-the-daemon nothing_of_the_daemon
binary_runs() {
	"$WORK/ctl/usr/bin/gns3-qemuctl" --version | tee /dev/stderr |
		grep -qx "gns3-qemuctl $(field "$CTL" Version | cut -d- -f1)"
}
dcheck ctl-binary-runs binary_runs
# As man(1) renders it, warnings on: none.
# man_renders PAGE.gz TITLE SECTION
man_renders() {
	zcat "$1" >"$WORK/page" && grep -q "^\.TH $2 $3 " "$WORK/page" || return 1
	local warnings
	warnings=$(LC_ALL=C.UTF-8 groff -man -Tutf8 -ww -z "$WORK/page" 2>&1)
	[ -z "$warnings" ] || {
		echo "$warnings"
		return 1
	}
}
dcheck ctl-man-renders man_renders "$WORK/ctl/usr/share/man/man1/gns3-qemuctl.1.gz" GNS3-QEMUCTL 1
# bash-completion sources the file when gns3-qemuctl is first completed: it must define
# the function and register it for the command.
bash_completion() {
	bash -c 'source "$1" && complete -p gns3-qemuctl' - "$WORK/ctl/usr/share/bash-completion/completions/gns3-qemuctl" |
		tee /dev/stderr | grep -q -- '-F _clap_complete_gns3_qemuctl gns3-qemuctl$'
}
dcheck ctl-bash-completion bash_completion
# zsh autoloads the file from its fpath by its first line.
zsh_completion() { head -n 1 "$WORK/ctl/usr/share/zsh/vendor-completions/_gns3-qemuctl" | grep -qx '#compdef gns3-qemuctl'; }
dcheck ctl-zsh-completion zsh_completion
dcheck ctl-fish-completion grep -q '^complete .*--command gns3-qemuctl .*GNS3_QEMUCTL_COMPLETE=fish gns3-qemuctl' \
	"$WORK/ctl/usr/share/fish/vendor_completions.d/gns3-qemuctl.fish"
dcheck ctl-schema-json /usr/bin/python3 -c \
	"import json, sys; assert json.load(open(sys.argv[1]))['\$schema'] == 'https://json-schema.org/draft/2020-12/schema'" \
	"$WORK/ctl/usr/share/gns3-qemuctl/lab.schema.json"
daemon_recommends_ctl() { field "$DEB" Recommends | tee /dev/stderr | tr ',' '\n' | grep -qx ' *gns3-qemuctl'; }
dcheck daemon-recommends-ctl daemon_recommends_ctl
daemon_not_ctl() { ! dpkg-deb -c "$DEB" | grep -E 'gns3-qemuctl|/usr/bin/'; }
dcheck daemon-does-not-ship-ctl daemon_not_ctl
# gns3-qemud-guests.service, whose stop stops every VM: shipped, enabled and started on
# install, only started (never restarted) by an upgrade, and stopped only on remove.
dpkg-deb -e "$DEB" "$WORK/control"
# shellcheck disable=SC2016 # "$1" as the script has it
guests_unit() {
	dpkg-deb -c "$DEB" | grep -E ' \./usr/lib/systemd/system/gns3-qemud-guests\.service$' &&
		grep -F "deb-systemd-helper enable gns3-qemud-guests.service" "$WORK/control/postinst" &&
		grep -F "deb-systemd-invoke start gns3-qemud-guests.service" "$WORK/control/postinst" &&
		! grep -E "restart.*gns3-qemud-guests" "$WORK/control/postinst" "$WORK/control/prerm" &&
		[ "$(grep -c gns3-qemud-guests "$WORK/control/prerm")" = 1 ] &&
		grep -B1 -F "stop gns3-qemud-guests.service" "$WORK/control/prerm" | grep -F '"$1" = remove'
}
dcheck daemon-guests-unit guests_unit

# The GNS3 compute: its files, the daemon's package beneath it, its config a conffile, and
# its unit enabled and started on install (cargo-deb's snippets), stopped on remove.
compute_files() {
	sort -k2 <<-'EOF'
		-rw-r--r-- /etc/gns3-qemud/compute.toml
		-rwxr-xr-x /usr/bin/gns3-qemud-compute
		-rw-r--r-- /usr/lib/systemd/system/gns3-qemud-compute.service
		-rw-r--r-- /usr/lib/sysusers.d/gns3-qemud-compute.conf
		-rw-r--r-- /usr/share/doc/gns3-qemud-compute/changelog.Debian.gz
		-rw-r--r-- /usr/share/doc/gns3-qemud-compute/copyright
		-rw-r--r-- /usr/share/man/man8/gns3-qemud-compute.8.gz
	EOF
}
dcheck compute-files diff <(compute_files) <(files "$COMPUTE")
compute_fields() {
	[ "$(field "$COMPUTE" Package)" = gns3-qemud-compute ] &&
		[ "$(field "$COMPUTE" Version)" = "$(field "$DEB" Version)" ] &&
		field "$COMPUTE" Depends | tee /dev/stderr | tr ',' '\n' | grep -qx ' *gns3-qemud'
}
dcheck compute-name-version-depends compute_fields
compute_runs() {
	"$WORK/compute/usr/bin/gns3-qemud-compute" --version | tee /dev/stderr |
		grep -qx "gns3-qemud-compute $(field "$COMPUTE" Version | cut -d- -f1)"
}
dcheck compute-binary-runs compute_runs
dcheck compute-man-renders man_renders "$WORK/compute/usr/share/man/man8/gns3-qemud-compute.8.gz" GNS3-QEMUD-COMPUTE 8
dpkg-deb -e "$COMPUTE" "$WORK/compute-control"
compute_unit() {
	grep -qx /etc/gns3-qemud/compute.toml "$WORK/compute-control/conffiles" &&
		grep -F "deb-systemd-helper enable gns3-qemud-compute.service" "$WORK/compute-control/postinst" &&
		grep -F 'deb-systemd-invoke $_dh_action gns3-qemud-compute.service' "$WORK/compute-control/postinst" &&
		grep -F "systemd-sysusers" "$WORK/compute-control/postinst" &&
		grep -F "deb-systemd-invoke stop gns3-qemud-compute.service" "$WORK/compute-control/prerm"
}
dcheck compute-unit compute_unit
daemon_not_compute() { ! dpkg-deb -c "$DEB" | grep -E 'compute'; }
dcheck daemon-does-not-ship-compute daemon_not_compute

echo "== debs: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
