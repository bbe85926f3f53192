#!/bin/bash
# The demo of gns3-qemud: builds the daemon, its client gns3-qemuctl and a tiny Linux guest,
# runs the daemon on a private D-Bus bus in a temp dir (the system bus, /var/lib and /etc are
# left alone), brings up a lab of two linked VMs with `gns3-qemuctl up`, and prints how to
# drive it with gns3-qemuctl (and busctl). Ctrl-C stops the VMs, the daemon and the bus, and
# removes the temp dir.
#
# Usage: sudo tests/demo.sh
# Needs: Debian 12 on amd64, root (apt-get, and the daemon's user gns3-qemud made with
#        systemd-sysusers from the package's own file), cargo from rustup. Installs the
#        Debian packages it lacks. The daemon runs as gns3-qemud, as the installed unit runs it.
# shellcheck disable=SC2317 # shellcheck 0.9 takes the functions run from traps for dead code
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NAME=org.gns3.Qemu
MANAGER=/org/gns3/Qemu

say() { printf 'demo.sh: %s\n' "$*" >&2; }
die() {
  say "$*"
  exit 1
}

[ "$(id -u)" = 0 ] || die "run me as root: sudo $0"

# --- Debian packages ------------------------------------------------------------------------

# shellcheck source=tests/packages.sh
. "$REPO/tests/packages.sh"
need qemu-system-x86_64 qemu-system-x86
need qemu-img qemu-utils # the daemon makes the VM's disks with it
need dbus-daemon dbus-daemon
need busctl systemd
need systemd-sysusers systemd # the daemon's user, from systemd/gns3-qemud.sysusers
need setpriv util-linux       # to start the daemon as that user
need telnet telnet # only for you, to attach to the console
need cc gcc        # rustc links through cc
# gcc only recommends the C library's startup files, and recommends are not installed.
need_pkg libc6-dev
# tests/guest/build.sh needs nothing more: it fetches busybox-static and the kernel with
# `apt-get download` and unpacks them itself.
install_missing

# --- the daemon -----------------------------------------------------------------------------

# Build as the owner of the checkout, with their rustup toolchain: under sudo, PATH does not
# have ~/.cargo/bin, and a build as root would leave a target/ its owner cannot write.
OWNER=$(stat -c %U "$REPO")
OWNER_HOME=$(getent passwd "$OWNER" | cut -d: -f6)
CARGO=
AS_OWNER=()
if [ "$OWNER" != root ] && [ -x "$OWNER_HOME/.cargo/bin/cargo" ]; then
  CARGO=$OWNER_HOME/.cargo/bin/cargo
  AS_OWNER=(runuser -u "$OWNER" -- env HOME="$OWNER_HOME" PATH="$OWNER_HOME/.cargo/bin:$PATH")
else
  for c in "$(command -v cargo || true)" "$HOME/.cargo/bin/cargo" /root/.cargo/bin/cargo; do
    if [ -n "$c" ] && [ -x "$c" ]; then
      CARGO=$c
      break
    fi
  done
  [ -z "$CARGO" ] || AS_OWNER=(env PATH="$(dirname "$CARGO"):$PATH")
fi
if [ -z "$CARGO" ]; then
  cat >&2 <<EOF
demo.sh: cargo not found. Install the Rust toolchain with rustup, as ${OWNER} (the owner of
$REPO), then run this again:
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh
Debian 12's own cargo package is too old for this project (it needs Rust 1.89 or newer).
EOF
  exit 1
fi

say "building gns3-qemud and gns3-qemuctl (cargo build --release)"
(cd "$REPO" && "${AS_OWNER[@]}" "$CARGO" build --release)
DAEMON=$REPO/target/release/gns3-qemud
CTL=$REPO/target/release/gns3-qemuctl
if [ ! -x "$DAEMON" ] || [ ! -x "$CTL" ]; then
  die "cargo built no $DAEMON or $CTL (is CARGO_TARGET_DIR set?)"
fi

# --- the guest ------------------------------------------------------------------------------

say "building the test guest (tests/guest/build.sh)"
GUEST=$("$REPO/tests/guest/build.sh" | tail -n 1)
if [ ! -f "$GUEST/vmlinuz" ] || [ ! -f "$GUEST/initrd.gz" ]; then
  die "tests/guest/build.sh made no guest in '$GUEST'"
fi

# --- stopping -------------------------------------------------------------------------------

TMP=
BUS=
BUS_PID=
DAEMON_PID=

# SIGTERM, then SIGKILL after 10 s: the cleanup must not hang on a stuck child.
end_child() {
  local pid=$1 what=$2 i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$what ignored SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  return 0
}

# QEMUs of this demo: the daemon puts their pid file in the temp dir, so it is in their
# command line, and no other QEMU has it.
demo_qemus() {
  local p cmd
  [ -n "$TMP" ] || return 0
  for p in /proc/[0-9]*; do
    cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    if [[ $cmd == *qemu-system* && $cmd == *"$TMP"* ]]; then echo "${p#/proc/}"; fi
  done
}

cleanup() {
  local status=$? vm pids
  set +e
  # A second Ctrl-C must not cut this short and leave a QEMU behind, nor a reader of our
  # output that the Ctrl-C ended (`demo.sh | tee log`).
  trap '' INT TERM PIPE
  if [ -n "$BUS" ] && [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    # The daemon leaves VMs running when it exits (a restart of the service must not kill
    # them), so stop them first: every VM on this bus, also those you created by hand.
    for vm in $(busctl --address="$BUS" call "$NAME" "$MANAGER" org.gns3.Qemu.Manager ListVMs 2>/dev/null |
      grep -o '/org/gns3/Qemu/vm/[0-9a-f]*'); do
      say "stopping VM $vm"
      busctl --address="$BUS" --timeout=60 call "$NAME" "$vm" org.gns3.Qemu.VM Stop ||
        say "Stop of $vm failed"
    done
  fi
  end_child "$DAEMON_PID" gns3-qemud
  end_child "$BUS_PID" dbus-daemon
  pids=$(demo_qemus)
  if [ -n "$pids" ]; then
    say "a QEMU of this demo is still running, killing it: ${pids//$'\n'/ }"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null
    status=1
  fi
  [ -z "$TMP" ] || rm -rf "$TMP"
  if [ "$status" = 0 ]; then echo "stopped cleanly"; fi
  exit "$status"
}
trap cleanup EXIT
# Ctrl-C is how this demo is meant to end, so it is a success.
trap 'trap "" PIPE; { echo >&2; say "stopping"; } || true; exit 0' INT TERM

# Prints the end of the daemon's log, then fails.
fail() {
  say "$*"
  if [ -s "$TMP/gns3-qemud.log" ]; then
    say "end of the daemon's log:"
    tail -n 20 "$TMP/gns3-qemud.log" >&2
  fi
  exit 1
}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/gns3-qemud-demo.XXXXXX")
# Others may connect to the bus (to read properties and watch, as the policy allows them);
# calls stay limited to root and the gns3 group by the policy itself.
chmod 755 "$TMP"

# The daemon's user, as the package makes it; the daemon owns its state and runtime dirs,
# and gets its binary and the guest where it may read them (the checkout and the guest's
# build may be in a home it cannot enter).
systemd-sysusers "$REPO/systemd/gns3-qemud.sysusers"
install -d -o gns3-qemud -g gns3-qemud "$TMP/state" "$TMP/run"
install -m 755 "$DAEMON" "$TMP/gns3-qemud"
DAEMON=$TMP/gns3-qemud
install -d -m 755 "$TMP/bin"
install -m 755 "$CTL" "$TMP/bin/gns3-qemuctl"
CTL=$TMP/bin/gns3-qemuctl
install -d -m 755 "$TMP/guest"
install -m 644 "$GUEST/vmlinuz" "$GUEST/initrd.gz" "$TMP/guest/"
GUEST=$TMP/guest

# --- the bus --------------------------------------------------------------------------------

# A bus like Debian's system bus (deny by default, services punch holes) with the project's
# own policy file, so the demo runs under the same rules as the installed service.
sed -e "s|@SOCKET@|$TMP/bus|" -e "s|@POLICY@|$REPO/dbus/org.gns3.Qemu.conf|" \
  "$REPO/tests/private-bus.conf.in" >"$TMP/bus.conf"

# setsid: Ctrl-C goes to the terminal's whole process group, and the bus and the daemon
# (which handles SIGINT by exiting) must still be there when the cleanup stops the VM.
coproc DBUS_COPROC {
  exec setsid dbus-daemon --nofork --config-file="$TMP/bus.conf" --print-address 2>"$TMP/dbus-daemon.log"
}
BUS_PID=$DBUS_COPROC_PID
# dbus-daemon prints its address once it listens: that line is the readiness signal.
read -r -t 30 BUS <&"${DBUS_COPROC[0]}" || true
if [ -z "$BUS" ]; then
  say "dbus-daemon did not start:"
  cat "$TMP/dbus-daemon.log" >&2
  exit 1
fi

# --- the daemon -----------------------------------------------------------------------------

# TCG, not KVM: on many cloud and nested-virtualisation machines /dev/kvm opens but guests
# hang, and a demo must boot everywhere. On a machine where KVM works, set
#   accelerator = "auto"
# (KVM where /dev/kvm is usable, else TCG), or per VM: set-property ... Accelerator s auto.
cat >"$TMP/gns3-qemud.toml" <<'EOF'
# tests/demo.sh: TCG, because on many cloud and nested machines /dev/kvm opens but guests hang
accelerator = "tcg"
EOF

# NOTIFY_SOCKET and JOURNAL_STREAM are dropped in case this script runs under systemd: the
# daemon would notify the wrong manager and log to the journal instead of the log file.
setsid setpriv --reuid=gns3-qemud --regid=gns3-qemud --init-groups \
  env -u NOTIFY_SOCKET -u JOURNAL_STREAM HOME="$TMP/state" "$DAEMON" \
  --bus "$BUS" \
  --state-dir "$TMP/state" \
  --runtime-dir "$TMP/run" \
  --config "$TMP/gns3-qemud.toml" \
  </dev/null >"$TMP/gns3-qemud.log" 2>&1 &
DAEMON_PID=$!

# The daemon takes its bus name only once every object is served: owning it means ready.
ready=false
for ((i = 0; i < 300; i++)); do
  if busctl --address="$BUS" status "$NAME" >/dev/null 2>&1; then
    ready=true
    break
  fi
  kill -0 "$DAEMON_PID" 2>/dev/null || fail "gns3-qemud exited during start-up"
  sleep 0.1
done
$ready || fail "gns3-qemud did not take $NAME on the bus within 30 s"

# --- the lab --------------------------------------------------------------------------------

# Two VMs of the test guest with a cable between their eth0s; `up --wait` returns once both
# consoles have printed GUEST-READY.
LAB=$TMP/demo.yml
cat >"$LAB" <<EOF
# A lab of gns3-qemuctl: 'gns3-qemuctl up $LAB' brings it up as written.
name: demo
defaults:
  kernel: $GUEST/vmlinuz
  initrd: $GUEST/initrd.gz
  append: console=ttyS0 panic=-1
  ram: 128
  ready: {console: GUEST-READY}
nodes:
  pc1: {}
  pc2: {}
links:
  - endpoints: [pc1:eth0, pc2:eth0]
EOF

say "bringing up the lab 'demo' (gns3-qemuctl up --wait $LAB)"
"$CTL" --address="$BUS" up --wait --timeout 300 "$LAB" || fail "gns3-qemuctl up failed"
PORT=$("$CTL" --address="$BUS" show pc1 -p ConsolePort --value)
reply=$(busctl --address="$BUS" get-property "$NAME" "$MANAGER" org.gns3.Qemu.Manager ConsoleHost)
HOST=${reply#s \"}
HOST=${HOST%\"}
VM=$(busctl --address="$BUS" call "$NAME" "$MANAGER" org.gns3.Qemu.Manager GetVM s pc1)
VM=${VM#o \"}
VM=${VM%\"}

cat <<EOF

========================================================================================
 gns3-qemud is running on a private bus, with the lab 'demo': pc1 and pc2, two tiny Linux
 guests (TCG) with a cable between their eth0s. Its file: $LAB

 Drive it from another terminal, as root (the bus policy lets only root and the gns3
 group call methods). gns3-qemuctl finds the bus as it finds the system bus:

   export PATH=$TMP/bin:\$PATH DBUS_SYSTEM_BUS_ADDRESS='$BUS'
   gns3-qemuctl list
   gns3-qemuctl console pc1          # Enter for a shell; Ctrl-] detaches
   gns3-qemuctl links
   gns3-qemuctl watch                # every change, as it happens; Ctrl-C ends it
   gns3-qemuctl unlink pc1:eth0
   gns3-qemuctl link pc1:eth0 pc2:eth0
   gns3-qemuctl set pc2 CpuThrottling=50
   gns3-qemuctl graph --lab demo     # Graphviz dot; --format mermaid
   gns3-qemuctl down $LAB
   gns3-qemuctl up $LAB

 The same VMs with busctl (the D-Bus objects gns3-qemuctl drives):

   busctl --address='$BUS' tree $NAME
   busctl --address='$BUS' introspect $NAME $VM
   busctl --address='$BUS' get-property $NAME $VM org.gns3.Qemu.VM State
   busctl --address='$BUS' call $NAME $VM org.gns3.Qemu.VM Reload

 pc1's console by telnet: telnet $HOST $PORT (leave with Ctrl-] then 'quit').
 The daemon's log: $TMP/gns3-qemud.log
 Ctrl-C here stops the VMs, the daemon and the bus, and removes $TMP.
========================================================================================
EOF

# Only Ctrl-C (or SIGTERM) should end the demo; the daemon ending by itself is a failure.
status=0
wait "$DAEMON_PID" || status=$?
DAEMON_PID=
fail "gns3-qemud exited by itself (status $status)"
