#!/bin/bash
# Builds the tiny Linux guest that the integration tests boot in QEMU, from Debian packages only:
#   - kernel: vmlinuz of the generic linux-image-<abi>-amd64 (apt-get download, no install); the
#     cloud flavour is smaller but lacks e1000, QEMU's default NIC model
#   - initramfs: busybox-static plus a few modules (ACPI button, evdev, virtio-net stack, e1000,
#     the disk and CD-ROM drivers);
#     a module that is built into the kernel is simply absent from the package and skipped
# The guest's /init prints on the console (ttyS0):
#   GUEST-READY            once modules are loaded and the power button is watched
#   GUEST-NET <if> <mac>   for every NIC it brings up, hot-plugged ones too (polled each second)
#   GUEST-CPU <n>          for every hot-added vCPU it brings online (cpu<n>, polled each second)
#   GUEST-POWERDOWN        when the ACPI power button is pressed (QMP system_powerdown), then
#                          it powers off
# and keeps a root shell on the console for tests to type commands into.
#
# Usage: tests/guest/build.sh [OUTDIR]
#   OUTDIR defaults to ${GNS3_TEST_GUEST_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gns3-qemud/test-guest}
#   and is owned by this script: it is replaced as a whole. It gets vmlinuz, initrd.gz, stamp
#   (kernel package and /init version) and apt-lists (which package lists named that kernel).
#   The last line of stdout is OUTDIR (absolute). A guest built from the same kernel package and
#   the same /init is reused at once.
# Needs: root (or a user allowed to run apt-get update, only when the package lists are missing).
# Boot: qemu-system-x86_64 -m 128 -nographic -no-reboot -kernel OUTDIR/vmlinuz \
#         -initrd OUTDIR/initrd.gz -append "console=ttyS0 panic=-1"
set -euo pipefail

# Bump when anything below changes the guest other than write_init (whose text is hashed anyway).
GUEST_VERSION=1

OUT=${1:-${GNS3_TEST_GUEST_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gns3-qemud/test-guest}}
OUT=$(realpath -m -- "$OUT")

# Load order matters: the initramfs has no modules.dep, so /init insmods them in this order.
MODULES=(
  drivers/acpi/button
  drivers/input/evdev
  drivers/virtio/virtio_ring
  drivers/virtio/virtio
  drivers/virtio/virtio_pci_legacy_dev
  drivers/virtio/virtio_pci_modern_dev
  drivers/virtio/virtio_pci
  net/core/failover
  drivers/net/net_failover
  drivers/net/virtio_net
  drivers/net/ethernet/intel/e1000/e1000
  # disks and the CD-ROM drive: IDE (ata_piix), SATA (ahci), sd, sr, virtio-blk,
  # virtio-scsi, NVMe, with what sd_mod and nvme-core need for T10 protection information
  drivers/scsi/scsi_common
  drivers/scsi/scsi_mod
  drivers/ata/libata
  drivers/ata/ata_piix
  drivers/ata/libahci
  drivers/ata/ahci
  lib/crc64
  crypto/crc64_rocksoft_generic
  lib/crc64-rocksoft
  crypto/crct10dif_common
  crypto/crct10dif_generic
  lib/crc-t10dif
  block/t10-pi
  drivers/scsi/sd_mod
  drivers/cdrom/cdrom
  drivers/scsi/sr_mod
  drivers/block/virtio_blk
  drivers/scsi/virtio_scsi
  drivers/nvme/host/nvme-core
  drivers/nvme/host/nvme
)

write_init() {
  cat <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in /lib/mod/*.ko; do insmod $m 2>/dev/null; done
# power button -> poweroff; the evdev is opened here, before GUEST-READY, so that a
# system_powerdown sent right after the marker is not lost (evdev drops events nobody has open)
for e in /sys/class/input/event*; do
  case "$(cat $e/device/name 2>/dev/null)" in
    *"Power Button"*) exec 3</dev/input/${e##*/}
      ( dd bs=24 count=1 <&3 >/dev/null 2>&1; echo GUEST-POWERDOWN; sync; poweroff -f ) &
      exec 3<&- ;;
  esac
done
echo "GUEST-READY"
# bring up every NIC (hot-plugged too) and report it once
( while :; do
    for i in /sys/class/net/eth*; do
      [ -e "$i" ] || continue; n=${i##*/}; k=$n.$(cat $i/ifindex)  # names are reused after unplug
      if [ ! -e /tmp/up.$k ]; then ip link set $n up && touch /tmp/up.$k && echo "GUEST-NET $n $(cat $i/address)"; fi
    done
    # hot-added vCPUs come offline: nothing else here would bring them up
    for c in /sys/devices/system/cpu/cpu[0-9]*; do
      [ "$(cat $c/online 2>/dev/null)" = 0 ] && echo 1 >$c/online && echo "GUEST-CPU ${c##*/cpu}"
    done; sleep 1
  done ) &
# cttyhack gives the shell the real console (ttyS0) as controlling tty, so ^C and job control work
while :; do setsid cttyhack sh; sleep 1; done
EOF
}

log() { echo "build.sh: $*" >&2; }
die() { log "$*"; exit 1; }

kernel_pkg() {
  apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}

# Identifies the package lists: while they are unchanged, apt-cache names the same kernel package.
apt_lists() {
  { stat -c '%n %s %Y' /var/lib/apt/lists/*_Packages* 2>/dev/null || true; } | sha256sum | cut -c1-16
}

# Sets KPKG, LISTS and STAMP.
resolve_kernel() {
  KPKG=$(kernel_pkg)
  if [ -z "$KPKG" ]; then
    log "no package lists, running apt-get update"
    apt-get update -qq >&2
    KPKG=$(kernel_pkg)
    [ -n "$KPKG" ] || die "apt-cache knows no linux-image-amd64 (is this Debian amd64?)"
  fi
  LISTS=$(apt_lists)
  STAMP="$KPKG $GUEST_ID"
}

GUEST_ID="guest-$GUEST_VERSION init-$({ write_init; printf '%s\n' "${MODULES[@]}"; } | sha256sum | cut -c1-16)"

has_guest() { [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initrd.gz" ]; }
is_built() { has_guest && [ "$(cat "$OUT/stamp" 2>/dev/null)" = "$STAMP" ]; }

# apt-cache takes about a second where pkgcache.bin is disabled (Docker images do that), so a
# guest whose kernel was resolved from the current package lists is taken without asking it.
if has_guest && [ "$(cat "$OUT/apt-lists" 2>/dev/null)" = "$(apt_lists)" ] &&
  [ "$(cut -d' ' -f2- "$OUT/stamp" 2>/dev/null)" = "$GUEST_ID" ]; then
  echo "$OUT"
  exit 0
fi
resolve_kernel
if is_built; then
  # The lists changed but still name this kernel: remember them for the next fast check.
  # A read-only shared guest still works, only without the fast check.
  { echo "$LISTS" >"$OUT/.apt-lists.$$" && mv -f "$OUT/.apt-lists.$$" "$OUT/apt-lists"; } 2>/dev/null || true
  echo "$OUT"
  exit 0
fi

PARENT=$(dirname "$OUT")
NAME=$(basename "$OUT")
mkdir -p "$PARENT"
# Concurrent test runs wait for one build instead of all downloading the kernel.
exec 9>"$PARENT/.$NAME.lock"
flock 9
if is_built; then
  echo "$OUT"
  exit 0
fi
if [ -e "$OUT" ] && [ ! -f "$OUT/stamp" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
  die "$OUT exists, is not empty and holds no guest: refusing to replace it"
fi
# Holding the lock, any temp dir left here is from an aborted run.
rm -rf "$PARENT/.$NAME.tmp."* "$PARENT/.$NAME.old."*

TMP=$(mktemp -d "$PARENT/.$NAME.tmp.XXXXXX")
chmod 755 "$TMP"
OLD=
trap 'rm -rf "$TMP" ${OLD:+"$OLD"}' EXIT
W=$TMP/work
mkdir -p "$W/dl" "$W/kpkg" "$W/bb"

log "downloading $KPKG and busybox-static"
download() { (cd "$W/dl" && apt-get download "$KPKG" busybox-static) >"$W/apt.log" 2>&1; }
if ! download; then
  # Stale package lists name versions the mirror no longer has.
  log "apt-get download failed, running apt-get update and retrying"
  apt-get update -qq >&2
  resolve_kernel
  rm -f "$W"/dl/*.deb
  download || { cat "$W/apt.log" >&2; die "apt-get download $KPKG busybox-static failed"; }
fi

dpkg -x "$W"/dl/busybox-static_*.deb "$W/bb"
BB=$W/bb/bin/busybox
[ -x "$BB" ] || die "busybox-static has no /bin/busybox"

# Extract only vmlinuz and the wanted modules: the whole package unpacks to ~400 MB.
# Patterns start with '*' because newer packages ship /usr/lib/modules instead of /lib/modules.
patterns=('*/boot/vmlinuz-*')
for m in "${MODULES[@]}"; do patterns+=("*/modules/*/kernel/$m.ko*"); done
set +e
dpkg-deb --fsys-tarfile "$W"/dl/"$KPKG"_*.deb |
  tar -x -C "$W/kpkg" --wildcards --wildcards-match-slash "${patterns[@]}" 2>"$W/tar.log"
st=("${PIPESTATUS[@]}")
set -e
# tar exits 2 when a pattern matched nothing, i.e. for modules built into this kernel.
if [ "${st[0]}" != 0 ] || { [ "${st[1]}" != 0 ] && [ "${st[1]}" != 2 ]; } ||
  grep -v -e 'Not found in archive' -e 'Exiting with failure status' "$W/tar.log" >&2; then
  die "extracting $KPKG failed"
fi

VMLINUZ=$(find "$W/kpkg" -path '*/boot/vmlinuz-*' -type f | head -1)
[ -n "$VMLINUZ" ] || die "$KPKG has no /boot/vmlinuz-*"
cp "$VMLINUZ" "$TMP/vmlinuz"

R=$W/root
mkdir -p "$R/bin" "$R/lib/mod" "$R/proc" "$R/sys" "$R/dev" "$R/tmp"
cp "$BB" "$R/bin/busybox"
n=0
for m in "${MODULES[@]}"; do
  n=$((n + 1))
  f=$(find "$W/kpkg" -path "*/kernel/$m.ko*" -type f | head -1)
  [ -n "$f" ] || continue
  dst="$R/lib/mod/$(printf %02d $n)-$(basename "$m").ko"
  case $f in
    *.xz) "$BB" xzcat "$f" >"$dst" ;;
    *.zst)
      command -v zstd >/dev/null || { log "installing zstd for .ko.zst modules"; apt-get install -y -qq zstd >&2; }
      zstd -qdc "$f" >"$dst"
      ;;
    *.gz) gzip -dc "$f" >"$dst" ;;
    *) cp "$f" "$dst" ;;
  esac
done
write_init >"$R/init"
chmod +x "$R/init"
(cd "$R" && find . | "$BB" cpio -o -H newc 2>/dev/null) | gzip -9 >"$TMP/initrd.gz"
echo "$STAMP" >"$TMP/stamp"
echo "$LISTS" >"$TMP/apt-lists"
rm -rf "$W"

if [ -e "$OUT" ]; then
  OLD=$PARENT/.$NAME.old.$$
  mv -T "$OUT" "$OLD"
fi
mv -T "$TMP" "$OUT"
log "built $(du -sh "$OUT/vmlinuz" | cut -f1) vmlinuz + $(du -sh "$OUT/initrd.gz" | cut -f1) initrd.gz from $KPKG"
echo "$OUT"
