//! Resetting and growing disks on real guests (TCG): after ResetDisks what the guest wrote to
//! its disk is gone and its UDP tunnel still carries traffic; a disk grown live (running
//! and paused) and offline (stopped, and before the first start) has its new size in the
//! guest.

mod common;

use common::udp::Peer;
use common::*;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zbus::Variant;

const BOOT: Duration = Duration::from_secs(120);
const RUN: Duration = Duration::from_secs(30);
const MIB: u64 = 1 << 20;
const MARK: &[u8] = b"GNS3-RESET-MARK";

/// A blank qcow2 base of `mib` MiB in `dir`.
fn base(dir: &Path, name: &str, mib: u64) -> Variant<'static> {
    qemu_img(
        dir,
        &["create", "-q", "-f", "qcow2", name, &format!("{mib}M")],
    );
    Variant::from(dir.join(name).to_string_lossy().into_owned())
}

fn vm_dir(lab: &Lab, id: &str) -> PathBuf {
    lab.dir.path().join("state/vms").join(id)
}

/// Boots the started VM's guest and gives its first NIC `ip`.
fn boot(vm_console: u16, ip: &str) -> Console {
    let mut console = Console::connect(vm_console);
    console.wait_for("GUEST-READY", BOOT).unwrap();
    console.wait_for("GUEST-NET eth0 ", BOOT).unwrap();
    console
        .run(&format!("ip addr add {ip}/24 dev eth0"), RUN)
        .unwrap();
    console
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// How many of the first bytes of the guest's first disk are the mark's, read from the
/// disk itself (the page cache dropped first).
const MARK_READ: &str =
    "echo 3 >/proc/sys/vm/drop_caches; head -c 15 /dev/vda | tr -d '\\000' | wc -c";

#[tokio::test]
async fn after_reset_disks_what_the_guest_wrote_is_gone_and_the_tunnel_carries_traffic() {
    let lab = Lab::start().await;
    let dir = lab.dir.path();
    let peer = Peer::new();
    let port = lab.manager.allocate_udp_port().await.unwrap();
    let vm = create(
        &lab.manager,
        "reset",
        guest_settings(&[
            ("HdaDiskImage", base(dir, "hda.qcow2", 16)),
            ("HdaDiskInterface", Variant::from("virtio")),
            ("Tpm", Variant::from(true)),
        ]),
    )
    .await;
    let id = vm.id().await.unwrap();
    let own = vm_dir(&lab, &id);
    vm.add_udp_tunnel(0, port, "127.0.0.1", peer.port())
        .await
        .unwrap();
    let tunnels = vm.tunnels().await.unwrap();
    vm.start().await.unwrap();
    let guest_ip = Ipv4Addr::new(10, 0, 0, 1);
    let mut console = boot(vm.console_port().await.unwrap(), "10.0.0.1");
    let first = Ipv4Addr::new(10, 0, 0, 9);
    assert!(peer.ask(port, first, guest_ip).contains(&first));

    console
        .run(
            "printf GNS3-RESET-MARK | dd of=/dev/vda bs=512 conv=sync 2>/dev/null; sync",
            RUN,
        )
        .unwrap();
    assert_eq!(console.run(MARK_READ, RUN).unwrap().trim(), "15");
    // A running VM's disks are QEMU's: refused, and the guest's disk keeps what it wrote.
    let e = vm.reset_disks().await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.InvalidState", "{e}");
    assert_eq!(console.run(MARK_READ, RUN).unwrap().trim(), "15");
    drop(console);
    vm.stop().await.unwrap();
    let overlay = own.join("hda_disk.qcow2");
    assert!(
        contains(&std::fs::read(&overlay).unwrap(), MARK),
        "the guest's write is not in {}",
        overlay.display()
    );
    assert!(own.join("tpm").read_dir().unwrap().next().is_some());
    let path = vm.inner().path().to_string();
    let before = all_properties(&lab.conn, &path, "org.gns3.Qemu.VM").await;

    vm.reset_disks().await.unwrap();
    assert!(!overlay.exists() && !own.join("tpm").exists());
    assert!(dir.join("hda.qcow2").exists(), "the base is not the VM's");
    assert_eq!(
        all_properties(&lab.conn, &path, "org.gns3.Qemu.VM").await,
        before,
        "ResetDisks changed a property"
    );
    assert_eq!(vm.tunnels().await.unwrap(), tunnels);

    vm.start().await.unwrap();
    let mut console = boot(vm.console_port().await.unwrap(), "10.0.0.1");
    assert_eq!(console.run(MARK_READ, RUN).unwrap().trim(), "0");
    let second = Ipv4Addr::new(10, 0, 0, 10);
    assert!(peer.ask(port, second, guest_ip).contains(&second));
    assert!(overlay.exists() && own.join("tpm").exists());
    drop(console);
    vm.stop().await.unwrap();
}

/// The size of each of the guest's virtio disks, in 512-byte sectors.
const SIZES: &str = "cat /sys/block/vda/size /sys/block/vdb/size";

fn sectors(a: u64, b: u64) -> String {
    format!("{}\n{}", a * MIB / 512, b * MIB / 512)
}

#[tokio::test]
async fn a_grown_disk_has_its_new_size_in_the_guest_live_and_offline() {
    let lab = Lab::start().await;
    let dir = lab.dir.path();
    let virtio = || Variant::from("virtio");
    let vm = create(
        &lab.manager,
        "grown",
        guest_settings(&[
            ("HdaDiskImage", base(dir, "hda.qcow2", 16)),
            ("HdbDiskImage", base(dir, "hdb.qcow2", 17)),
            ("HdaDiskInterface", virtio()),
            ("HdbDiskInterface", virtio()),
        ]),
    )
    .await;
    let id = vm.id().await.unwrap();
    let refused = |e: zbus::Error| match e {
        zbus::Error::MethodError(name, Some(text), _) => format!("{name}: {text}"),
        other => panic!("{other}"),
    };
    // Before the first start: the disk is made now, at its new size.
    vm.resize_disk("hdb", 24 * MIB).await.unwrap();
    assert!(vm_dir(&lab, &id).join("hdb_disk.qcow2").exists());
    vm.start().await.unwrap();
    let mut console = Console::connect(vm.console_port().await.unwrap());
    console.wait_for("GUEST-READY", BOOT).unwrap();
    console.run_until(SIZES, &sectors(16, 24), RUN);

    // Live: running, then paused.
    vm.resize_disk("hda", 20 * MIB).await.unwrap();
    console.run_until(SIZES, &sectors(20, 24), RUN);
    let e = refused(vm.resize_disk("hda", 16 * MIB).await.unwrap_err());
    assert_eq!(
        e,
        "org.gns3.Qemu.Error.InvalidArgument: hda of VM 'grown' is 20971520 bytes already, \
         and a disk only grows: give more than 20971520 bytes"
    );
    vm.suspend().await.unwrap();
    vm.resize_disk("hdb", 32 * MIB).await.unwrap();
    vm.resume().await.unwrap();
    console.run_until(SIZES, &sectors(20, 32), RUN);
    drop(console);
    vm.stop().await.unwrap();

    // Stopped: the file grows, and the guest finds it so at the next start.
    vm.resize_disk("hda", 28 * MIB).await.unwrap();
    vm.start().await.unwrap();
    let mut console = Console::connect(vm.console_port().await.unwrap());
    console.wait_for("GUEST-READY", BOOT).unwrap();
    console.run_until(SIZES, &sectors(28, 32), RUN);
    drop(console);
    vm.stop().await.unwrap();

    // ResetDisks brings back the bases' sizes.
    vm.reset_disks().await.unwrap();
    let e = refused(vm.resize_disk("hda", 16 * MIB).await.unwrap_err());
    assert!(e.contains("is 16777216 bytes already"), "{e}");
    assert!(!vm_dir(&lab, &id).join("hda_disk.qcow2").exists());
}
