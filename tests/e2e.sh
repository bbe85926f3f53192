#!/bin/bash
# End-to-end test of the Debian package on a real systemd, as root on Debian 12:
#   - builds the packages, the daemon's, gns3-qemuctl's and the GNS3 compute's
#     (packaging/build-deb.sh), checks
#     what they hold (tests/debs.sh), and builds the test guest (tests/guest/build.sh);
#   - makes a bookworm root with debootstrap (tests/debian-root.sh: cached in
#     $E2E_CACHE/<hash of what it holds>), and boots it with systemd-nspawn --boot (systemd
#     as PID 1 of the container, a real system bus), driven with nsenter, on an overlay of
#     its own (upper dir on a tmpfs of the test's), which keeps the cache clean and keeps
#     what the first boot wrote for the second;
#   - inside: installs the three packages; drives the service with the installed gns3-qemuctl as
#     a member of group gns3 would (info, create, list, completion, start, stop, delete, a
#     two-VM lab brought up until ready and destroyed) and as an outsider (refused, with the
#     hint); creates and starts a VM (TCG) over D-Bus, reads
#     GUEST-READY on its serial console, finds the VM's id in the daemon's journal, restarts
#     the daemon (the VM keeps running and is found again), stops the VM; checks the GNS3
#     compute's user, password file and unit, and that it answers only with the credentials;
#   - powers the container off with VMs running and boots it again from the same root: the
#     host's shutdown stopped each VM as its OnStop says (gns3-qemud-guests.service), and
#     the Autostart VM and the one restore_on_boot keeps come back, the third does not;
#   - stops the daemon, purges the packages and checks that what they installed is gone.
# Every check prints PASS or FAIL (with its output); the exit status is non-zero if any failed.
# Longer than 400 lines: one scenario in one container, its steps in order; the second boot
# is tests/e2e-reboot.sh, sourced.
# Where the machine cannot boot a container (not root, no debootstrap root, nspawn refused),
# it prints "e2e: SKIPPED: <reason>" and exits 0, except under CI (CI=true), where that is a
# failure. E2E_SKIP=<reason> skips it on purpose, under CI too, saying so (tests/fresh-machine.sh
# sets it: it runs the test command inside a container, where nspawn cannot nest).
#   sudo tests/e2e.sh
# Environment: E2E_CACHE (default /var/cache/gns3-qemud-e2e), E2E_MIRROR (default: the
# Debian mirror of /etc/apt/sources.list*), E2E_KEEP=1 keeps the work directory.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
T_START=$(date +%s.%N)
since() { echo "$(date +%s.%N) $1" | awk '{printf "%.1f", $1 - $2}'; }

skip() {
	if [ "${CI:-}" = true ]; then
		echo "e2e: FAIL: under CI this test must run, but it cannot: $*"
		exit 1
	fi
	echo "e2e: SKIPPED: $*"
	exit 0
}
if [ -n "${E2E_SKIP:-}" ]; then
	echo "e2e: SKIPPED on purpose (E2E_SKIP): $E2E_SKIP"
	exit 0
fi

[ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap, systemd-nspawn)"

# --- host tools --------------------------------------------------------------------------
# shellcheck source=tests/packages.sh
. tests/packages.sh
need systemd-nspawn systemd-container
need debootstrap debootstrap
need nsenter util-linux
need_pkg debian-archive-keyring
install_missing || skip "cannot install systemd-container and debootstrap with apt"

# --- the package and the test guest ------------------------------------------------------
echo "== building the packages (packaging/build-deb.sh)"
mapfile -t DEBS < <(packaging/build-deb.sh | tail -n 3)
DEB=${DEBS[0]:-} CTLDEB=${DEBS[1]:-} COMPUTEDEB=${DEBS[2]:-}
for d in "$DEB" "$CTLDEB" "$COMPUTEDEB"; do
	[ -f "$d" ] || {
		echo "e2e: FAIL: packaging/build-deb.sh did not print the three .debs (${DEBS[*]})"
		exit 1
	}
	echo "   $d"
done
echo "== building the test guest (tests/guest/build.sh)"
GUEST=$(tests/guest/build.sh | tail -n 1)
if ! [ -f "$GUEST/vmlinuz" ] || ! [ -f "$GUEST/initrd.gz" ]; then
	echo "e2e: FAIL: tests/guest/build.sh gave no guest ($GUEST)"
	exit 1
fi
echo "   $GUEST"

# --- the root ----------------------------------------------------------------------------
# What the root holds beyond minbase: systemd and the bus, and the package's dependencies and
# recommends (so that apt installs the .deb without package lists or network). The serial
# console is read with bash's /dev/tcp, so no netcat or python is needed.
INCLUDE=systemd,systemd-sysv,dbus,qemu-system-x86,qemu-utils,cpulimit
SUITE=bookworm
CACHE=${E2E_CACHE:-/var/cache/gns3-qemud-e2e}
# shellcheck source=tests/debian-root.sh
. tests/debian-root.sh
t0=$(date +%s.%N)
ROOT=$(debian_root "$CACHE" "$SUITE" "$INCLUDE") && [ -n "$ROOT" ] ||
	skip "cannot make a $SUITE root with debootstrap (above)"
T_ROOT=$(since "$t0")

# --- boot ----------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/gns3-qemud-e2e.XXXXXX)
mkdir -p "$WORK/share"
cp "$DEB" "$CTLDEB" "$COMPUTEDEB" "$WORK/share/"
DEBNAME=$(basename "$DEB")
CTLDEBNAME=$(basename "$CTLDEB")
COMPUTEDEBNAME=$(basename "$COMPUTEDEB")
NSPID=
LEADER=
# The container's root: an overlay of the cached root, kept across the container's two
# boots (--volatile=overlay would drop what the first wrote). Its upper dir is on a tmpfs:
# overlayfs takes no upper dir on an overlay, which the host's /tmp may be.
MERGED=$WORK/root
mkdir -p "$WORK/ovl" "$MERGED"
mounted() { findmnt -rn "$1" >/dev/null; }
# poweroff_container [SECONDS]: powers the container off from inside and waits for nspawn
# to exit; 0 if it did in time.
poweroff_container() {
	local tries=$((${1:-20} * 10))
	if [ -n "$LEADER" ] && kill -0 "$LEADER" 2>/dev/null; then
		nsenter --target "$LEADER" --mount --pid -- systemctl --no-block poweroff >/dev/null 2>&1
	fi
	for _ in $(seq 1 "$tries"); do
		kill -0 "$NSPID" 2>/dev/null || break
		sleep 0.1
	done
	! kill -0 "$NSPID" 2>/dev/null
}
cleanup() {
	local rc=$?
	if [ -n "$NSPID" ] && kill -0 "$NSPID" 2>/dev/null; then
		if ! poweroff_container 20; then
			echo "e2e: the container did not power off in 20 s; killing it"
			kill -KILL "$NSPID" 2>/dev/null
		fi
		wait "$NSPID" 2>/dev/null
	fi
	mounted "$MERGED" && umount "$MERGED"
	mounted "$WORK/ovl" && umount "$WORK/ovl"
	if [ "${E2E_KEEP:-0}" = 1 ]; then
		echo "e2e: kept $WORK"
	elif mounted "$MERGED" || mounted "$WORK/ovl"; then
		echo "e2e: $WORK is still mounted; not removed"
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! { mount -t tmpfs -o mode=0755 gns3-qemud-e2e "$WORK/ovl" &&
	mkdir "$WORK/ovl/upper" "$WORK/ovl/work" &&
	mount -t overlay gns3-qemud-e2e -o "lowerdir=$ROOT,upperdir=$WORK/ovl/upper,workdir=$WORK/ovl/work" "$MERGED"; }; then
	skip "cannot mount an overlay of the root on $MERGED (above)"
fi

# boot_container N: boots the root with systemd-nspawn --boot (console in console-N.log)
# and waits for systemd to answer; sets NSPID and LEADER.
boot_container() {
	# The unified cgroup hierarchy, as a Debian 12 host has it (this machine's own is
	# hybrid): the daemon's unit delegates its cgroup to it there.
	SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn -D "$MERGED" --boot --register=no --keep-unit \
		--console=read-only --machine=gns3-qemud-e2e \
		--bind-ro="$WORK/share:/share" --bind-ro="$GUEST:/guest" \
		>"$WORK/console-$1.log" 2>&1 &
	NSPID=$!
	LEADER=
	for _ in $(seq 1 300); do
		kill -0 "$NSPID" 2>/dev/null || break
		LEADER=$(pgrep -P "$NSPID" -x systemd) && [ -S "/proc/$LEADER/root/run/systemd/private" ] && break
		LEADER=
		sleep 0.1
	done
	if [ -z "$LEADER" ]; then
		tail -n 20 "$WORK/console-$1.log"
		kill -0 "$NSPID" 2>/dev/null && kill "$NSPID"
		return 1
	fi
}

echo "== boot: systemd-nspawn --boot"
T_BOOT0=$(date +%s.%N)
boot_container 1 || skip "systemd-nspawn did not boot systemd within 30 s (console above)"

IN() { nsenter --target "$LEADER" --mount --uts --ipc --net --pid --cgroup -- "$@"; }

pass=0
fail=0
RESULTS=()
# check NAME COMMAND...: runs COMMAND in the container; PASS if it succeeds, else FAIL with
# its output. Its output is in $out afterwards. host_check runs COMMAND on the host.
out=
check() { check_with IN "$@"; }
host_check() { check_with env "$@"; }
check_with() {
	local run=$1 name=$2 rc
	shift 2
	out=$("$run" "$@" 2>&1)
	rc=$?
	if [ $rc -eq 0 ]; then
		echo "PASS $name"
		pass=$((pass + 1))
		RESULTS+=("PASS $name")
	else
		echo "FAIL $name (exit $rc)"
		[ -n "$out" ] && echo "$out" | tail -n 40 | sed 's/^/    /'
		fail=$((fail + 1))
		RESULTS+=("FAIL $name")
	fi
	return $rc
}
# Shows the daemon's journal (on a failure).
journal() {
	echo "    --- journalctl -u gns3-qemud -u gns3-qemud-supervisor -u gns3-qemud-compute"
	IN journalctl --no-pager -o short-precise -u gns3-qemud -u gns3-qemud-supervisor -u gns3-qemud-compute -n 60 2>&1 | sed 's/^/    /'
}

# system_up: waits for the container's boot to end; exits on a boot that failed.
system_up() {
	local state
	state=$(IN timeout 120 systemctl is-system-running --wait 2>&1)
	echo "   system $state after $(since "$T_BOOT0")s"
	case "$state" in
	running) ;;
	degraded) IN systemctl --failed --no-legend --no-pager | sed 's/^/    failed at boot: /' ;;
	*)
		echo "FAIL boot: $state"
		IN systemctl --failed --no-legend --no-pager | sed 's/^/    /'
		exit 1
		;;
	esac
}
system_up
T_BOOT=$(since "$T_BOOT0")
FAILED_AT_BOOT=$(IN systemctl --failed --no-legend --plain --no-pager | awk '{print $1}' | sort)

# --- the checks --------------------------------------------------------------------------
BUS=(busctl --system)
MGR=(org.gns3.Qemu /org/gns3/Qemu org.gns3.Qemu.Manager)

# Diagnostic only: E2E_UNIT_DROPIN="SystemCallFilter=seccomp" adds these [Service] lines to
# gns3-qemud.service (a drop-in in /etc), to try a fix of the unit without rebuilding.
if [ -n "${E2E_UNIT_DROPIN:-}" ]; then
	echo "   drop-in for gns3-qemud.service: $E2E_UNIT_DROPIN"
	IN sh -c 'mkdir -p /etc/systemd/system/gns3-qemud.service.d && printf "[Service]\n%s\n" "$1" >/etc/systemd/system/gns3-qemud.service.d/e2e.conf' - "$E2E_UNIT_DROPIN"
fi
# The packages as built: their files, modes and fields (tests/debs.sh prints each check).
host_check debs tests/debs.sh "$DEB" "$CTLDEB" "$COMPUTEDEB"
check install env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "/share/$DEBNAME" "/share/$CTLDEBNAME" "/share/$COMPUTEDEBNAME" || exit 1
FILES=$(IN dpkg-query -L gns3-qemud gns3-qemuctl gns3-qemud-compute)
check user-and-group sh -c 'getent passwd gns3-qemud && getent group gns3 && id gns3-qemud'
check enable-now systemctl enable --now gns3-qemud
check is-enabled systemctl is-enabled gns3-qemud.service gns3-qemud-supervisor.socket
check is-active systemctl is-active gns3-qemud.service gns3-qemud-supervisor.socket || journal
# The daemon keeps the boot id systemd gives it (%b: the container's, which nspawn makes
# anew at each boot), once it has started the VMs of this boot (none yet).
# shellcheck disable=SC2016 # expanded by the container's sh
BOOTED_ID='[ "$(cat /var/lib/gns3-qemud/boot-id 2>/dev/null)" = "$(tr -d - </proc/sys/kernel/random/boot_id)" ]'
check boot-id-kept timeout 30 sh -c "until $BOOTED_ID; do sleep 0.2; done" || journal
BOOT_ID1=$(IN cat /proc/sys/kernel/random/boot_id)

# The guest's files must be readable by the daemon's user: copy them out of the bind mount.
IN sh -c 'mkdir -p /srv/e2e && cp /guest/vmlinuz /guest/initrd.gz /srv/e2e/ && chmod 755 /srv/e2e && chmod 644 /srv/e2e/*'

# The installed client, as a member of gns3 runs it: the service's bus policy lets it in.
# An outsider is refused, and told how to join the group; nothing is created.
IN useradd --system --no-create-home --groups gns3 e2e-member
MEMBER="setpriv --reuid=e2e-member --regid=e2e-member --init-groups"
OUTSIDER="setpriv --reuid=nobody --regid=nogroup --clear-groups"
VERSION=$(IN dpkg-query -W -f='${Version}' gns3-qemud | cut -d- -f1)
check ctl-info sh -c "$MEMBER gns3-qemuctl info | tee /dev/stderr | grep -qx 'Version: $VERSION'" || journal
check ctl-create sh -c "$MEMBER gns3-qemuctl create e2e-ctl --ram 128M --kernel /srv/e2e/vmlinuz \
	--initrd /srv/e2e/initrd.gz --append 'console=ttyS0 panic=-1 quiet' --set Accelerator=tcg" || journal
check ctl-list sh -c "$MEMBER gns3-qemuctl --no-legend list | tee /dev/stderr | grep -qE '^e2e-ctl +- +stopped +[0-9]+ +128M +1 +0\$'"
# The installed bash hook, sourced as bash-completion does, on a Tab after `show `.
check ctl-bash-completion sh -c "[ -f /usr/share/bash-completion/completions/gns3-qemuctl ] &&
	$MEMBER bash --norc -c 'source /usr/share/bash-completion/completions/gns3-qemuctl; COMP_WORDS=(gns3-qemuctl show \"\"); COMP_CWORD=2
		_clap_complete_gns3_qemuctl gns3-qemuctl \"\" show; printf \"%s\\n\" \"\${COMPREPLY[@]}\"' | tee /dev/stderr | grep -qx e2e-ctl"
check ctl-start sh -c "$MEMBER gns3-qemuctl start e2e-ctl && $MEMBER gns3-qemuctl show e2e-ctl -p State --value | tee /dev/stderr | grep -qx running" || journal
check ctl-stop sh -c "$MEMBER gns3-qemuctl stop e2e-ctl && $MEMBER gns3-qemuctl show e2e-ctl -p State --value | tee /dev/stderr | grep -qx stopped" || journal
check ctl-delete sh -c "$MEMBER gns3-qemuctl delete e2e-ctl && { $MEMBER gns3-qemuctl show e2e-ctl; [ \$? -eq 4 ]; }" || journal
check ctl-outsider-refused sh -c "$OUTSIDER gns3-qemuctl create e2e-outsider 2>/tmp/outsider.err; rc=\$?; cat /tmp/outsider.err
	[ \$rc -eq 1 ] && grep -qF 'usermod -a -G gns3' /tmp/outsider.err && ! gns3-qemuctl --no-legend list | grep e2e-outsider"
check ctl-man-page sh -c "dpkg-query -L gns3-qemuctl | grep -x /usr/share/man/man1/gns3-qemuctl.1.gz && [ -s /usr/share/man/man1/gns3-qemuctl.1.gz ] &&
	{ ! command -v man >/dev/null || man -w gns3-qemuctl; }"

# A lab from a file with the installed client, as the member: two guests with a cable,
# brought up until both consoles are ready, then destroyed with nothing left.
IN sh -c 'cat >/srv/e2e/lab.yml && chmod 644 /srv/e2e/lab.yml' <<'EOF'
name: e2e-lab
defaults:
  kernel: /srv/e2e/vmlinuz
  initrd: /srv/e2e/initrd.gz
  append: console=ttyS0 panic=-1 quiet
  ram: 128
  accelerator: tcg
  ready: {console: GUEST-READY}
nodes:
  pc1: {}
  pc2: {}
links:
  - endpoints: [pc1:eth0, pc2:eth0]
EOF
check ctl-lab-up sh -c "$MEMBER gns3-qemuctl up --wait --timeout 5m /srv/e2e/lab.yml | tee /dev/stderr | grep -qx 'Lab e2e-lab is ready.'" || journal
check ctl-lab-links sh -c "$MEMBER gns3-qemuctl --no-legend links --lab e2e-lab | tee /dev/stderr | grep -qE '^pc1:eth0 +pc2:eth0 +[0-9]+ [0-9]+\$'"
check ctl-lab-destroy sh -c "$MEMBER gns3-qemuctl destroy --yes /srv/e2e/lab.yml && { $MEMBER gns3-qemuctl list --lab e2e-lab; [ \$? -eq 4 ]; }" || journal

# The GNS3 compute as its package sets it up: its user in gns3, a password of its own, the
# unit up on port 3080 and answering the controller's first call only with the credentials.
# HTTP by bash's /dev/tcp, as the consoles are read.
IN sh -c 'cat >/srv/e2e/compute-get && chmod 755 /srv/e2e/compute-get' <<'EOF'
#!/bin/bash
# compute-get PATH [USER:PASSWORD]: the compute's whole reply to GET /v3/compute/PATH.
auth=
[ -n "${2:-}" ] && auth="Authorization: Basic $(printf %s "$2" | base64 -w0)"$'\r\n'
exec 3<>/dev/tcp/127.0.0.1/3080 || exit 1
printf 'GET /v3/compute/%s HTTP/1.1\r\nHost: localhost\r\n%sConnection: close\r\n\r\n' "$1" "$auth" >&3
timeout 10 cat <&3
EOF
check compute-user sh -c 'getent passwd gns3-qemud-compute && id -nG gns3-qemud-compute | tr " " "\n" | grep -qx gns3'
check compute-password sh -c 'stat -c "%a %U %G" /etc/gns3-qemud/compute.password | tee /dev/stderr | grep -qx "640 root gns3-qemud-compute" &&
	[ "$(head -n 1 /etc/gns3-qemud/compute.password | wc -c)" -gt 20 ]'
check compute-active timeout 30 sh -c 'until systemctl is-active -q gns3-qemud-compute; do sleep 0.2; done' || journal
check compute-capabilities sh -c '/srv/e2e/compute-get capabilities "gns3:$(head -n 1 /etc/gns3-qemud/compute.password)" |
	tee /dev/stderr | grep -q "^{.*\"version\":\"3\.0\.6\""' || journal
check compute-401 sh -c '/srv/e2e/compute-get capabilities | tee /dev/stderr | head -n 1 | grep -q "^HTTP/1.1 401 "' || journal
check compute-401-wrong-password sh -c '/srv/e2e/compute-get capabilities gns3:wrong | head -n 1 | grep -q "^HTTP/1.1 401 "' || journal
check compute-security-exposure sh -c "systemd-analyze security --no-pager gns3-qemud-compute.service | tee /dev/stderr | tail -n 1 |
	grep -E 'exposure level for gns3-qemud-compute.service: (0\\.[0-9]|1\\.[0-9]|2\\.[0-9]) '" || journal

VM=
if check create-vm "${BUS[@]}" call "${MGR[@]}" CreateVM 'sa{sv}' e2e 5 \
	KernelImage s /srv/e2e/vmlinuz Initrd s /srv/e2e/initrd.gz \
	KernelCommandLine s "console=ttyS0 panic=-1 quiet" Ram u 128 Accelerator s tcg; then
	VM=$(echo "$out" | cut -d'"' -f2)
	echo "    $VM"
else
	journal
fi
ID=${VM##*/}

prop() { IN "${BUS[@]}" get-property org.gns3.Qemu "$VM" org.gns3.Qemu.VM "$1" 2>&1; }

if [ -n "$VM" ]; then
	PORT=$(prop ConsolePort | awk '{print $2}')
	echo "    console port $PORT"
	# The console reader waits for the port before Start returns: QEMU drops serial output
	# while no client is connected. bash's /dev/tcp reads the raw telnet stream.
	IN timeout 90 bash -c '
		for i in $(seq 1 600); do exec 3<>/dev/tcp/127.0.0.1/'"$PORT"' && break; sleep 0.1; done 2>/dev/null
		grep -a -m1 -o GUEST-READY <&3' >"$WORK/serial.out" 2>&1 &
	READER=$!
	T_VM0=$(date +%s.%N)
	check start "${BUS[@]}" call org.gns3.Qemu "$VM" org.gns3.Qemu.VM Start || journal
	check state-running sh -c "${BUS[*]} get-property org.gns3.Qemu $VM org.gns3.Qemu.VM State | tee /dev/stderr | grep -qx 's \"running\"'"
	PID1=$(prop Pid | awk '{print $2}')
	echo "    QEMU pid $PID1"
	# The reader gives up after 90 s; GUEST-READY must come within 60 s of Start.
	wait "$READER"
	T_VM=$(since "$T_VM0")
	if grep -q GUEST-READY "$WORK/serial.out" && awk "BEGIN{exit !($T_VM <= 60)}"; then
		echo "PASS console-GUEST-READY (${T_VM}s after Start)"
		pass=$((pass + 1))
		RESULTS+=("PASS console-GUEST-READY (${T_VM}s)")
	else
		echo "FAIL console-GUEST-READY (after ${T_VM}s)"
		sed 's/^/    /' "$WORK/serial.out" | tail -n 20
		IN "${BUS[@]}" call org.gns3.Qemu "$VM" org.gns3.Qemu.VM ReadLog 2>&1 | tail -c 2000 | sed 's/^/    /'
		fail=$((fail + 1))
		RESULTS+=("FAIL console-GUEST-READY")
	fi

	# The daemon's events carry the fields VM_ID and VM_NAME. On a failure, the entries that
	# name the VM's id at all are shown.
	check journal-vm-id sh -c "journalctl -u gns3-qemud VM_ID=$ID -o cat --no-pager | grep -F 'VM started' | head -n 1 | grep . &&
		journalctl -u gns3-qemud VM_ID=$ID VM_NAME=e2e -o cat --no-pager | grep -qF 'VM started' ||
		{ journalctl -u gns3-qemud -o json --no-pager | grep -F '$ID' | head -n 3; exit 1; }"

	# On cgroup v2 the QEMU lives under the daemon's unit, in a threaded cgroup of its own,
	# beside the daemon (src/supervisor/cgroup.rs), before and after a restart.
	UNIT_CG=/sys/fs/cgroup/system.slice/gns3-qemud.service
	in_unit() { check "$1" sh -c "grep -x '0::/system.slice/gns3-qemud.service/qemu-$PID1' /proc/$PID1/cgroup &&
		grep -x '0::/system.slice/gns3-qemud.service' /proc/\$(systemctl show -P MainPID gns3-qemud)/cgroup &&
		[ \$(cat $UNIT_CG/qemu-$PID1/cgroup.type) = threaded ] && stat -c %U $UNIT_CG/qemu-$PID1 | grep -x gns3-qemud" || journal; }
	in_unit cgroup-under-unit
	# Raised from 1024 (to 65536, or as far as the system lets: 20000 in this container).
	check open-files-limit sh -c "grep 'open files' /proc/\$(systemctl show -P MainPID gns3-qemud)/limits | tee /dev/stderr | awk '{ exit !(\$4 > 1024 && \$4 == \$5) }'"
	# A lab machine's firmware and TPM under the unit's sandbox: OVMF and swtpm come with the
	# package's Recommends; the VM's swtpm runs as the daemon's user in its unit, beside its
	# QEMU, is found again after the restart below and ends with Stop.
	UVM=
	if check create-uefi-tpm "${BUS[@]}" call "${MGR[@]}" CreateVM 'sa{sv}' e2e-uefi 7 \
		KernelImage s /srv/e2e/vmlinuz Initrd s /srv/e2e/initrd.gz KernelCommandLine s "console=ttyS0 panic=-1 quiet" \
		Ram u 256 Accelerator s tcg Firmware s uefi Tpm b true; then
		UVM=$(echo "$out" | cut -d'"' -f2)
	else
		journal
	fi
	UVMI=(org.gns3.Qemu "$UVM" org.gns3.Qemu.VM)
	swtpms() { for p in /proc/[0-9]*; do case $(readlink "$p/exe") in */swtpm) echo "${p#/proc/} $(stat -c %U "$p")" ;; esac; done; }
	check uefi-tpm-start "${BUS[@]}" call "${UVMI[@]}" Start || journal
	SWTPM=$(IN bash -c "$(declare -f swtpms); swtpms")
	SWTPM_PID=${SWTPM%% *}
	echo "    swtpm: $SWTPM"
	check uefi-tpm-swtpm sh -c "echo '$SWTPM' | grep -qx '[0-9]* gns3-qemud' && grep -x '0::/system.slice/gns3-qemud.service' /proc/$SWTPM_PID/cgroup" || journal
	check uefi-tpm-monitor sh -c "${BUS[*]} call ${UVMI[*]} HumanMonitorCommand s 'info tpm' | tee /dev/stderr | grep -q 'tpm-tis'" || journal
	check uefi-vars sh -c "find /var/lib/gns3-qemud -name efivars.qcow2 | grep ." || journal
	check restart systemctl restart gns3-qemud || journal
	check restart-is-active systemctl is-active gns3-qemud
	check restart-same-pid sh -c "${BUS[*]} get-property org.gns3.Qemu $VM org.gns3.Qemu.VM Pid State | tee /dev/stderr | tr '\n' ' ' | grep -qx 'u $PID1 s \"running\" '"
	check restart-qemu-alive sh -c "kill -0 $PID1"
	check restart-uefi-tpm-found sh -c "${BUS[*]} get-property ${UVMI[*]} State | grep -qx 's \"running\"' && kill -0 $SWTPM_PID" || journal
	check uefi-tpm-stop "${BUS[@]}" call "${UVMI[@]}" Stop || journal
	check uefi-tpm-no-swtpm sh -c "! kill -0 $SWTPM_PID 2>/dev/null" || journal
	in_unit restart-cgroup-under-unit
	# Only the messages of the daemon's current run (its invocation id).
	INV=$(IN systemctl show -P InvocationID gns3-qemud)
	check journal-found-again sh -c "journalctl _SYSTEMD_INVOCATION_ID=$INV VM_ID=$ID -o cat --no-pager | grep -F 'found its QEMU running again' | grep ." || journal

	# The console after the restart, served by the new daemon: a member of gns3 gets it (its
	# scrollback holds GUEST-READY), an outsider gets one line saying who may. Who connects
	# is found through sock_diag, which needs AF_NETLINK in the unit. Root's ReadConsole has it too.
	check console-member sh -c "setpriv --reuid=e2e-member --regid=e2e-member --init-groups timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/$PORT; cat <&3' | grep -a -m1 -o GUEST-READY" || journal
	check console-outsider-refused sh -c "setpriv --reuid=nobody --regid=nogroup --clear-groups timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/$PORT; cat <&3' | tee /dev/stderr | grep -q 'only root and members of group gns3 may reach this console'" || journal
	check read-console sh -c "${BUS[*]} call org.gns3.Qemu $VM org.gns3.Qemu.VM ReadConsole u 0 | grep -qE '^ay [1-9]'" || journal
	check monitor-command sh -c "${BUS[*]} call org.gns3.Qemu $VM org.gns3.Qemu.VM HumanMonitorCommand s 'info status' | tee /dev/stderr | grep -q 'VM status: running'" || journal
	# The unit's exposure score (systemd-analyze security) is what it was before consoles
	# needed AF_NETLINK, or better.
	check security-exposure sh -c "systemd-analyze security --no-pager gns3-qemud.service | tee /dev/stderr | tail -n 1 | grep -E 'exposure level for gns3-qemud.service: (0\\.[0-9]|1\\.[0-6]) '" || journal

	# The privileged half, socket-activated, on the adopted VM: a priority above the
	# daemon's own (nice -5 on every QEMU thread) and a CPU limit (a cgroup of the VM's
	# own, else a cpulimit process watching it). Then a live tunnel, under the unit's
	# address-family and syscall filters.
	VMI=(org.gns3.Qemu "$VM" org.gns3.Qemu.VM)
	check priority-high sh -c "${BUS[*]} set-property ${VMI[*]} ProcessPriority s high &&
		for t in /proc/$PID1/task/*; do n=\$(cut -d')' -f2 \$t/stat | awk '{print \$17}'); [ \"\$n\" = -5 ] || { echo \"\$t nice \$n\"; exit 1; }; done" || journal
	# A CPU limit: cpu.max of the VM's cgroup where the unit has the cpu controller, else
	# a cpulimit run by the daemon as its own user (never by root).
	check throttle-50 sh -c "${BUS[*]} set-property ${VMI[*]} CpuThrottling u 50 &&
		for c in /proc/[0-9]*; do a=\$(tr '\\0' ' ' <\$c/cmdline 2>/dev/null); case \"\$a\" in cpulimit*) echo \"\$(stat -c %U \$c) \$a\";; esac; done >/tmp/cpulimits;
		cat /tmp/cpulimits; ! grep -q '^root ' /tmp/cpulimits &&
		{ grep -x '50000 100000' $UNIT_CG/qemu-$PID1/cpu.max 2>/dev/null || grep -q '^gns3-qemud cpulimit --pid=$PID1 ' /tmp/cpulimits; }" || journal
	check throttle-off-priority-low sh -c "${BUS[*]} set-property ${VMI[*]} CpuThrottling u 0 && ${BUS[*]} set-property ${VMI[*]} ProcessPriority s low &&
		[ \$(cut -d')' -f2 /proc/$PID1/stat | awk '{print \$17}') = 5 ]" || journal
	check tunnel-live sh -c "${BUS[*]} call ${VMI[*]} AddUdpTunnel uqsq 0 \$(${BUS[*]} call ${MGR[*]} AllocateUdpPort | awk '{print \$2}') 127.0.0.1 40000 &&
		${BUS[*]} get-property ${VMI[*]} Tunnels | tee /dev/stderr | grep -q '127.0.0.1' && ${BUS[*]} call ${VMI[*]} RemoveUdpTunnel u 0" || journal

	# Stop the VM here: "apt remove" would stop it as the host's shutdown does, through
	# gns3-qemud-guests.service, but this is Stop's own check.
	check stop-vm "${BUS[@]}" call org.gns3.Qemu "$VM" org.gns3.Qemu.VM Stop
	check vm-stopped sh -c "${BUS[*]} get-property org.gns3.Qemu $VM org.gns3.Qemu.VM State Pid | tee /dev/stderr | tr '\n' ' ' | grep -qx 's \"stopped\" u 0 ' && ! kill -0 $PID1 2>/dev/null"
	check vm-cgroup-gone sh -c "! [ -e $UNIT_CG/qemu-$PID1 ]"
else
	echo "SKIP start, console, journal, restart and stop-vm checks: no VM was created"
	RESULTS+=("SKIP VM checks")
fi

# The container powered off with VMs running, and booted again from the same root.
# shellcheck source=tests/e2e-reboot.sh
. tests/e2e-reboot.sh

check stop-daemon systemctl stop gns3-qemud
check daemon-units-not-failed sh -c '! systemctl is-failed gns3-qemud.service gns3-qemud-supervisor.service gns3-qemud-supervisor.socket gns3-qemud-guests.service gns3-qemud-compute.service' || journal
check purge env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q gns3-qemud gns3-qemuctl gns3-qemud-compute
# Every file (not directory) the package had is gone, and its state.
LEFT=$(IN sh -c 'while read -r f; do [ -d "$f" ] || ! [ -e "$f" ] || echo "$f"; done' <<<"$FILES")
if [ -z "$LEFT" ] && [ -n "$FILES" ]; then
	echo "PASS purge-files-gone ($(wc -l <<<"$FILES") paths in dpkg -L)"
	pass=$((pass + 1))
	RESULTS+=("PASS purge-files-gone")
else
	echo "FAIL purge-files-gone"
	printf '    left: %s\n' "${LEFT:-(dpkg -L listed nothing)}"
	fail=$((fail + 1))
	RESULTS+=("FAIL purge-files-gone")
fi
check purge-state-gone sh -c '! ls -ld /var/lib/gns3-qemud /var/lib/gns3-qemud-compute /etc/gns3-qemud /run/gns3-qemud 2>/dev/null'
# (minbase has no procps: look at /proc.)
check no-qemu-left sh -c 'for p in /proc/[0-9]*; do case $(readlink $p/exe) in *qemu-system*) echo "left: $p $(tr "\\0" " " <$p/cmdline)"; exit 1;; esac; done; exit 0'
# No unit failed that had not failed at boot already.
NEW_FAILED=$(comm -13 <(echo "$FAILED_AT_BOOT") <(IN systemctl --failed --no-legend --plain --no-pager | awk '{print $1}' | sort) | grep .)
if [ -z "$NEW_FAILED" ]; then
	echo "PASS no-failed-units${FAILED_AT_BOOT:+ (failed already at boot: $(tr "\n" " " <<<"$FAILED_AT_BOOT"))}"
	pass=$((pass + 1))
	RESULTS+=("PASS no-failed-units")
else
	echo "FAIL no-failed-units: $(tr "\n" " " <<<"$NEW_FAILED")"
	for u in $NEW_FAILED; do IN journalctl --no-pager -u "$u" -n 30 | sed 's/^/    /'; done
	fail=$((fail + 1))
	RESULTS+=("FAIL no-failed-units")
fi

echo "== e2e: root ${T_ROOT}s (to make, or to find cached), boot ${T_BOOT}s, total $(since "$T_START")s"
echo "== e2e: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
