#!/bin/bash
# Sourced by tests/e2e.sh, after its checks of the first boot and before the purge: the
# container powered off with VMs running, and booted again from the same root. It uses
# e2e.sh's helpers (IN, check, host_check, journal, poweroff_container, boot_container,
# system_up) and variables (BUS, MGR, MERGED, WORK, BOOTED_ID, BOOT_ID1).
# shellcheck disable=SC2154,SC2034 # set, and T_BOOT0 read, by tests/e2e.sh

# --- the host's shutdown and the next boot ------------------------------------------------
# Three VMs: e2e-auto (OnStop shutdown, Autostart), e2e-restore (power-off, no Autostart,
# brought back by restore_on_boot) and e2e-neither (started and stopped before the
# poweroff). Where the guest's GUEST-POWERDOWN is seen after the fact: the daemon's console
# scrollback is on /run, gone with the container, and the journal keeps no guest output,
# so e2e-auto's guest has a second serial port (ttyS1), a file in the state directory
# (which the unit lets QEMU write), and its /dev/console there: console=ttyS1 before
# console=ttyS0 on its command line gives /dev/console to ttyS1 (the order tried on the
# test guest; the kernel writes to both). The file is read from the host, through the kept
# root, while the container is down: the next boot's Autostart opens it anew.
TTYS1=/var/lib/gns3-qemud/e2e-auto.ttyS1
GUESTARGS=(KernelImage s /srv/e2e/vmlinuz Initrd s /srv/e2e/initrd.gz Ram u 128 Accelerator s tcg)
# create_vm NAME N-MORE MORE...: a VM of the test guest with N-MORE more settings; its path.
create_vm() {
	local name=$1 more=$2
	shift 2
	# "--": a value may begin with "-" (Options).
	IN "${BUS[@]}" call -- "${MGR[@]}" CreateVM 'sa{sv}' "$name" $((4 + more)) "${GUESTARGS[@]}" "$@" | cut -d'"' -f2
}
vm_prop() { IN "${BUS[@]}" get-property org.gns3.Qemu "$1" org.gns3.Qemu.VM "$2" | awk '{print $2}' | tr -d '"'; }
# until_running PATH: a loop for the container's sh, ending once the VM's State is running.
until_running() { echo "until [ \"\$(${BUS[*]} get-property org.gns3.Qemu $1 org.gns3.Qemu.VM State)\" = 's \"running\"' ]; do sleep 0.2; done"; }

check guests-unit-enabled systemctl is-enabled gns3-qemud-guests.service
check guests-unit-active systemctl is-active gns3-qemud-guests.service || journal
check restore-on-boot-config sh -c 'sed -i "s/^restore_on_boot = false\$/restore_on_boot = true/" /etc/gns3-qemud/gns3-qemud.toml &&
	grep -x "restore_on_boot = true" /etc/gns3-qemud/gns3-qemud.toml && systemctl restart gns3-qemud' || journal
AUTO=$(create_vm e2e-auto 4 KernelCommandLine s "console=ttyS1 console=ttyS0 panic=-1 quiet" \
	OnStop s shutdown Autostart b true Options s "-serial file:$TTYS1")
RESTORE=$(create_vm e2e-restore 1 KernelCommandLine s "console=ttyS0 panic=-1 quiet")
NEITHER=$(create_vm e2e-neither 1 KernelCommandLine s "console=ttyS0 panic=-1 quiet")
echo "    $AUTO $RESTORE $NEITHER"
check reboot-vms-created test -n "$AUTO" -a -n "$RESTORE" -a -n "$NEITHER" || journal
check reboot-vms-start sh -c "${BUS[*]} call org.gns3.Qemu $AUTO org.gns3.Qemu.VM Start &&
	${BUS[*]} call org.gns3.Qemu $RESTORE org.gns3.Qemu.VM Start &&
	${BUS[*]} call org.gns3.Qemu $NEITHER org.gns3.Qemu.VM Start && ${BUS[*]} call org.gns3.Qemu $NEITHER org.gns3.Qemu.VM Stop" || journal
# The power button is watched once the guest says GUEST-READY.
check auto-guest-ready timeout 90 sh -c "until grep -aq GUEST-READY $TTYS1 2>/dev/null; do sleep 0.5; done" || journal
AUTO_PID=$(vm_prop "$AUTO" Pid)
RESTORE_PID=$(vm_prop "$RESTORE" Pid)
echo "    QEMU pids: e2e-auto $AUTO_PID, e2e-restore $RESTORE_PID"

T_OFF0=$(date +%s.%N)
if poweroff_container 120; then
	echo "PASS poweroff ($(since "$T_OFF0")s)"
	pass=$((pass + 1))
	RESULTS+=("PASS poweroff")
else
	echo "FAIL poweroff: the container did not power off in 120 s"
	tail -n 30 "$WORK/console-1.log" | sed 's/^/    /'
	kill -KILL "$NSPID" 2>/dev/null
	fail=$((fail + 1))
	RESULTS+=("FAIL poweroff")
fi
wait "$NSPID" 2>/dev/null
# What the shutdown left in the kept root, read from the host.
host_check guest-powerdown grep -a GUEST-POWERDOWN "$MERGED$TTYS1"
host_check restore-kept sh -c "cat '$MERGED/var/lib/gns3-qemud/restore.json' && grep -q '\"${RESTORE##*/}\"' '$MERGED/var/lib/gns3-qemud/restore.json' &&
	! grep -q '\"${NEITHER##*/}\"' '$MERGED/var/lib/gns3-qemud/restore.json'"

echo "== boot again from the same root"
T_BOOT0=$(date +%s.%N)
boot_container 2 || {
	echo "FAIL boot-again: systemd-nspawn did not boot systemd within 30 s (console above)"
	exit 1
}
system_up
check again-daemon-active systemctl is-active gns3-qemud.service gns3-qemud-guests.service || journal
# The shutdown went through StopAll (the journal is kept on disk).
check again-journal-shutdown sh -c "journalctl -b -1 -u gns3-qemud -o cat --no-pager | grep -F 'stopping every VM' &&
	journalctl -b -1 -u gns3-qemud-guests -o cat --no-pager | tee /dev/stderr | grep -F 'Stopped gns3-qemud-guests.service'" || journal
check again-new-boot-id sh -c "[ \"\$(cat /proc/sys/kernel/random/boot_id)\" != '$BOOT_ID1' ]"
# An Autostart goes on after READY=1: within 60 s.
check again-autostart timeout 60 sh -c "$(until_running "$AUTO")" || journal
check again-restored timeout 60 sh -c "$(until_running "$RESTORE")" || journal
check again-boot-id-kept timeout 60 sh -c "until $BOOTED_ID; do sleep 0.2; done" || journal
check again-neither-stopped sh -c "[ \"\$(${BUS[*]} get-property org.gns3.Qemu $NEITHER org.gns3.Qemu.VM State)\" = 's \"stopped\"' ]"
check again-journal sh -c "journalctl -b -u gns3-qemud VM_NAME=e2e-auto -o cat --no-pager | grep -F 'started (Autostart)' &&
	journalctl -b -u gns3-qemud VM_NAME=e2e-restore -o cat --no-pager | grep -F 'started (restore_on_boot)'" || journal
AUTO_PID=$(vm_prop "$AUTO" Pid)
RESTORE_PID=$(vm_prop "$RESTORE" Pid)
echo "    QEMU pids: e2e-auto $AUTO_PID, e2e-restore $RESTORE_PID"
check again-restart systemctl restart gns3-qemud || journal
check again-restart-same-pids sh -c "[ \"\$(${BUS[*]} get-property org.gns3.Qemu $AUTO org.gns3.Qemu.VM Pid State | tr '\n' ' ')\" = 'u $AUTO_PID s \"running\" ' ] &&
	[ \"\$(${BUS[*]} get-property org.gns3.Qemu $RESTORE org.gns3.Qemu.VM Pid State | tr '\n' ' ')\" = 'u $RESTORE_PID s \"running\" ' ] &&
	kill -0 $AUTO_PID $RESTORE_PID &&
	[ \"\$(${BUS[*]} get-property org.gns3.Qemu $NEITHER org.gns3.Qemu.VM State)\" = 's \"stopped\"' ]" || journal
check again-poweroff-vms sh -c "${BUS[*]} call org.gns3.Qemu $AUTO org.gns3.Qemu.VM PowerOff && ${BUS[*]} call org.gns3.Qemu $RESTORE org.gns3.Qemu.VM PowerOff" || journal
