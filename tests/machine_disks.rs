//! Disks and the CD-ROM drive on real guests (TCG): every disk interface attaches a disk the
//! guest sees, a disk on `none` is attached by the user's Options, and media inserted and
//! ejected on the running VM is seen by the guest.

mod common;

use common::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zbus::Variant;

const BOOT: Duration = Duration::from_secs(120);
const RUN: Duration = Duration::from_secs(30);

/// Every disk the guest has, one line each, by size: `<512-byte sectors> <driver's name
/// prefix> <bus>` (ata: IDE or AHCI; virtio: virtio-blk or virtio-scsi; nvme), and the
/// CD-ROM drive as `cdrom <bus>`. Names alone would not do: sd* is both SATA and SCSI, in
/// the order the guest probes them.
const DISKS: &str = "for d in /sys/block/*; do n=${d##*/}; \
    case $(readlink -f $d) in */ata*) t=ata;; */virtio*) t=virtio;; */nvme*) t=nvme;; *) t=other;; esac; \
    case $n in sr*) echo cdrom $t; continue;; sd*) k=sd;; vd*) k=vd;; nvme*) k=nvme;; *) continue;; esac; \
    echo $(cat $d/size) $k $t; done | sort -n";

/// A blank qcow2 base of `mib` MiB in `dir`: the sizes tell the disks apart in the guest.
fn base(dir: &Path, name: &str, mib: u32) -> Variant<'static> {
    qemu_img(
        dir,
        &["create", "-q", "-f", "qcow2", name, &format!("{mib}M")],
    );
    Variant::from(dir.join(name).to_string_lossy().into_owned())
}

#[tokio::test]
async fn virtio_sata_scsi_and_nvme_disks_are_seen_by_the_guest() {
    let lab = Lab::start().await;
    let dir = lab.dir.path();
    let s = |v: &str| Variant::from(v.to_string());
    let (vm, mut console) = booted(
        &lab,
        "four-disks",
        &[
            ("HdaDiskImage", base(dir, "hda.qcow2", 16)),
            ("HdbDiskImage", base(dir, "hdb.qcow2", 17)),
            ("HdcDiskImage", base(dir, "hdc.qcow2", 18)),
            ("HddDiskImage", base(dir, "hdd.qcow2", 19)),
            ("HdaDiskInterface", s("virtio")),
            ("HdbDiskInterface", s("sata")),
            ("HdcDiskInterface", s("scsi")),
            ("HddDiskInterface", s("nvme")),
        ],
        BOOT,
    )
    .await;
    console.run_until(
        DISKS,
        "cdrom ata\n32768 vd virtio\n34816 sd ata\n36864 sd virtio\n38912 nvme nvme",
        RUN,
    );
    vm.stop().await.unwrap();
}

#[tokio::test]
async fn ide_disks_a_disk_attached_by_options_and_live_media() {
    let lab = Lab::start().await;
    let dir = lab.dir.path();
    // An ISO-sized image with a mark at its start, which the guest reads back.
    let iso: PathBuf = dir.join("media.iso");
    let mut media = b"GNS3-CDROM-MEDIA".to_vec();
    media.resize(1 << 20, 0);
    std::fs::write(&iso, media).unwrap();
    let (vm, mut console) = booted(
        &lab,
        "ide-disks",
        &[
            ("HdaDiskImage", base(dir, "hda.qcow2", 16)),
            ("HdbDiskImage", base(dir, "hdb.qcow2", 17)),
            ("HddDiskImage", base(dir, "hdd.qcow2", 19)),
            ("HdbDiskInterface", Variant::from("none".to_string())),
            (
                "Options",
                Variant::from("-device virtio-blk-pci,drive=gns3-hdb".to_string()),
            ),
        ],
        BOOT,
    )
    .await;
    console.run_until(
        DISKS,
        "cdrom ata\n32768 sd ata\n34816 vd virtio\n38912 sd ata",
        RUN,
    );

    let read = "dd if=/dev/sr0 bs=2048 count=1 2>/dev/null | head -c 16";
    let empty = "dd if=/dev/sr0 bs=2048 count=1 2>&1 >/dev/null | grep -o 'No medium found'";
    console.run_until(empty, "No medium found", RUN);
    let set = |image: String| {
        let vm = &vm;
        async move {
            let change = HashMap::from([("CdromImage", Variant::from(image))]);
            vm.configure(change).await.unwrap();
        }
    };
    set(iso.to_string_lossy().into_owned()).await;
    // The first read after the change may fail on the unit attention the drive reports.
    console.run_until(read, "GNS3-CDROM-MEDIA", RUN);
    console.run_until("cat /sys/block/sr0/size", "2048", RUN);
    set(String::new()).await;
    console.run_until(empty, "No medium found", RUN);
    vm.stop().await.unwrap();
}
