//! Disks in place and the care of a VM's own disks on real guests (TCG): with LinkedClone
//! false the guest writes to the base itself, which no other VM may then use; a leaked
//! cluster in a linked clone is repaired at Start, a corrupt one stops Start until
//! RepairDisks repairs it.

mod common;

use common::*;
use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zbus::Variant;

const BOOT: Duration = Duration::from_secs(120);
const RUN: Duration = Duration::from_secs(30);
const CLUSTER: u64 = 65536;

/// Where the guest writes its mark on the raw disk: 1 MiB in.
const MARK_AT: u64 = 1 << 20;
const MARK: &[u8] = b"GNS3-IN-PLACE-WRITE";

fn text(p: &Path) -> Variant<'static> {
    Variant::from(p.to_string_lossy().into_owned())
}

/// A zeroed raw image of 16 MiB, root's: the daemon's user may read it, not write it.
fn raw_base(dir: &Path) -> PathBuf {
    let base = dir.join("disk.raw");
    std::fs::File::create(&base)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    base
}

#[tokio::test]
async fn without_linked_clones_the_guest_writes_to_its_base_which_is_its_alone() {
    let lab = Lab::start().await;
    let base = raw_base(lab.dir.path());
    let settings = [
        ("HdaDiskImage", text(&base)),
        ("LinkedClone", Variant::Bool(false)),
    ];
    // QEMU would write it as the daemon's user: refused until that user may.
    let e = lab
        .manager
        .create_vm("in-place", guest_settings(&settings))
        .await
        .unwrap_err();
    assert_eq!(
        error_name(&e),
        "org.gns3.Qemu.Error.ImageNotAccessible",
        "{e}"
    );
    assert!(
        e.to_string().contains(&format!(
            "HdaDiskImage '{}' would be written in place (LinkedClone false), and the daemon \
             cannot open it for writing",
            base.display()
        )),
        "{e}"
    );
    let user = daemon_user();
    nix::unistd::chown(&base, Some(user.uid), Some(user.gid)).unwrap();
    let (vm, mut console) = booted(&lab, "in-place", &settings, BOOT).await;
    // The guest tells of its NIC within a second of GUEST-READY: not amid a command's output.
    console.wait_for("GUEST-NET eth0 ", BOOT).unwrap();
    let line = vm.command_line().await.unwrap().join(" ");
    assert!(
        line.contains(&format!(
            " -drive if=none,id=gns3-hda,file={},format=raw ",
            base.display()
        )),
        "{line}"
    );
    // The mark 1 MiB in, and a qcow2 magic at the start: probed, the disk would now pass
    // for a qcow2; its pinned format keeps it raw.
    let write = format!(
        "printf '{}' | dd of=/dev/sda bs=512 seek={} conv=notrunc 2>/dev/null; \
         printf 'QFI\\373\\0\\0\\0\\3' | dd of=/dev/sda conv=notrunc 2>/dev/null; sync; echo written",
        std::str::from_utf8(MARK).unwrap(),
        MARK_AT / 512
    );
    assert_eq!(console.run(&write, RUN).unwrap().trim_end(), "written");
    vm.stop().await.unwrap();
    let mut found = vec![0u8; MARK.len()];
    let file = std::fs::File::open(&base).unwrap();
    file.read_exact_at(&mut found, MARK_AT).unwrap();
    assert_eq!(found, MARK, "the guest's write is in the base itself");
    let mut magic = [0u8; 4];
    file.read_exact_at(&mut magic, 0).unwrap();
    assert_eq!(&magic, b"QFI\xfb");
    let vm_dir = lab
        .dir
        .path()
        .join("state/vms")
        .join(vm.id().await.unwrap());
    assert!(
        !vm_dir.join("hda_disk.qcow2").exists(),
        "no linked clone is made"
    );
    // Started again on the same raw disk, which the guest sees as it left it.
    vm.start().await.unwrap();
    let mut console = Console::connect(vm.console_port().await.unwrap());
    console.wait_for("GUEST-READY", BOOT).unwrap();
    console.wait_for("GUEST-NET eth0 ", BOOT).unwrap();
    let read = format!(
        "dd if=/dev/sda bs=512 skip={} count=1 2>/dev/null | head -c {}",
        MARK_AT / 512,
        MARK.len()
    );
    assert_eq!(
        console.run(&read, RUN).unwrap().trim_end(),
        std::str::from_utf8(MARK).unwrap()
    );
    vm.stop().await.unwrap();
    // The magic gone again, so that qemu-img finds the raw image the other VMs ask for.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&base)
        .unwrap()
        .write_all_at(&[0; 8], 0)
        .unwrap();

    // No other VM may have it: in place, or as the base of its linked clones.
    let m = &lab.manager;
    for linked in [false, true] {
        let other = HashMap::from([
            ("HdaDiskImage", text(&base)),
            ("LinkedClone", Variant::Bool(linked)),
        ]);
        let e = m.create_vm("second", other).await.unwrap_err();
        assert_eq!(
            error_name(&e),
            "org.gns3.Qemu.Error.ImageNotAccessible",
            "{e}"
        );
        assert!(
            e.to_string().contains(&format!(
                "HdaDiskImage '{}' is used in place (LinkedClone false) by VM 'in-place'",
                base.display()
            )),
            "{e}"
        );
    }
    let second = create(m, "second", HashMap::new()).await;
    let e = second
        .configure(HashMap::from([("HdbDiskImage", text(&base))]))
        .await
        .unwrap_err();
    assert_eq!(
        error_name(&e),
        "org.gns3.Qemu.Error.ImageNotAccessible",
        "{e}"
    );
    // Given back when the holder goes back to linked clones; then the other VM may clone it.
    vm.configure(HashMap::from([("LinkedClone", Variant::Bool(true))]))
        .await
        .unwrap();
    second
        .configure(HashMap::from([("HdbDiskImage", text(&base))]))
        .await
        .unwrap();
    // And now the first may not take it in place again.
    let e = vm
        .configure(HashMap::from([("LinkedClone", Variant::Bool(false))]))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("is the base of linked clones of VM 'second'"),
        "{e}"
    );
}

/// Reads a big-endian u64 of `file` at `at`.
fn u64_at(file: &std::fs::File, at: u64) -> u64 {
    let mut b = [0u8; 8];
    file.read_exact_at(&mut b, at).unwrap();
    u64::from_be_bytes(b)
}

/// Sets the 16-bit refcount of `cluster` in a qcow2 image (qemu-img's default layout: one
/// refcount block, named by the first entry of the refcount table).
fn set_refcount(image: &Path, cluster: u64, n: u16) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .unwrap();
    let table = u64_at(&f, 48);
    let block = u64_at(&f, table);
    f.write_all_at(&n.to_be_bytes(), block + 2 * cluster)
        .unwrap();
}

/// `qemu-img check --output=json` of `image`: its exit status and report.
fn check(image: &Path) -> (i32, serde_json::Value) {
    let out = std::process::Command::new("qemu-img")
        .args(["check", "--output=json", "-f", "qcow2"])
        .arg(image)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_default();
    (out.status.code().unwrap(), report)
}

#[tokio::test]
async fn a_leak_is_repaired_at_start_and_a_corrupt_clone_waits_for_repair_disks() {
    let lab = Lab::start().await;
    let dir = lab.dir.path();
    qemu_img(dir, &["create", "-q", "-f", "qcow2", "base.qcow2", "16M"]);
    let settings = [("HdaDiskImage", text(&dir.join("base.qcow2")))];
    let (vm, _console) = booted(&lab, "cared-for", &settings, BOOT).await;
    vm.stop().await.unwrap();
    let clone = dir
        .join("state/vms")
        .join(vm.id().await.unwrap())
        .join("hda_disk.qcow2");
    assert_eq!(check(&clone).0, 0);

    // A leak: one cluster past the image's end, counted as used by nothing.
    let end = check(&clone).1["image-end-offset"].as_u64().unwrap();
    let leaked = end.div_ceil(CLUSTER);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&clone)
        .unwrap()
        .set_len((leaked + 1) * CLUSTER)
        .unwrap();
    set_refcount(&clone, leaked, 1);
    let (status, report) = check(&clone);
    assert_eq!((status, &report["leaks"]), (3, &serde_json::json!(1)));
    vm.start().await.unwrap();
    let mut console = Console::connect(vm.console_port().await.unwrap());
    console.wait_for("GUEST-READY", BOOT).unwrap();
    // The guest runs on the repaired clone; RepairDisks wants it stopped.
    let e = vm.repair_disks().await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.InvalidState", "{e}");
    vm.stop().await.unwrap();
    let (status, report) = check(&clone);
    assert_eq!((status, report.get("leaks")), (0, None), "{report}");

    // Corruption: the L1 table's cluster counted as free.
    let f = std::fs::File::open(&clone).unwrap();
    let l1 = u64_at(&f, 40);
    set_refcount(&clone, l1 / CLUSTER, 0);
    assert_eq!(check(&clone).0, 2);
    let e = vm.start().await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.DiskImageFailed", "{e}");
    let message = e.to_string();
    assert!(
        message.contains(&format!(
            "disk {} of VM 'cared-for' is corrupt",
            clone.display()
        )) && message.contains("call RepairDisks() on the stopped VM"),
        "{message}"
    );
    assert_eq!(vm.state().await.unwrap(), "stopped");
    assert_eq!(vm.pid().await.unwrap(), 0);
    assert_eq!(
        qemu_pids_under(dir),
        Vec::<u32>::new(),
        "nothing left running"
    );

    let repaired = vm.repair_disks().await.unwrap();
    assert_eq!(repaired, [clone.to_string_lossy().into_owned()]);
    assert_eq!(check(&clone).0, 0);
    assert_eq!(vm.repair_disks().await.unwrap(), Vec::<String>::new());
    vm.start().await.unwrap();
    let mut console = Console::connect(vm.console_port().await.unwrap());
    console.wait_for("GUEST-READY", BOOT).unwrap();
    vm.stop().await.unwrap();
}

/// Who uses a base in place is not written down apart from the VMs' records: a new daemon
/// finds it again in them, as it finds names.
#[tokio::test]
async fn a_restarted_daemon_knows_which_vm_holds_a_base_in_place() {
    let mut lab = Lab::start().await;
    let base = raw_base(lab.dir.path());
    let user = daemon_user();
    nix::unistd::chown(&base, Some(user.uid), Some(user.gid)).unwrap();
    let in_place = || {
        HashMap::from([
            ("HdaDiskImage", text(&base)),
            ("LinkedClone", Variant::Bool(false)),
        ])
    };
    lab.manager.create_vm("holder", in_place()).await.unwrap();
    lab.daemon.terminate();
    lab.daemon.restart(&lab.bus);
    let conn = lab.daemon.connect().await;
    let m = manager(&conn).await;
    let e = m.create_vm("other", in_place()).await.unwrap_err();
    assert_eq!(
        error_name(&e),
        "org.gns3.Qemu.Error.ImageNotAccessible",
        "{e}"
    );
    assert!(e.to_string().contains("by VM 'holder'"), "{e}");
    // Deleting the holder gives it back.
    let holder = vm(&conn, &m.get_vm("holder").await.unwrap()).await;
    holder.delete().await.unwrap();
    m.create_vm("other", in_place()).await.unwrap();
}
