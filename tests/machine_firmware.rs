//! Firmware and TPM on real guests (TCG): the test guest boots under UEFI (OVMF loading its
//! kernel through fw_cfg) and keeps its UEFI variables from start to start, and under
//! Secure Boot on a q35; with Tpm it sees
//! a TPM served by a swtpm of the VM's own, which ends with the VM and is found again by a
//! restarted daemon.

mod common;

use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zbus::Variant;

const BOOT: Duration = Duration::from_secs(180);
const RUN: Duration = Duration::from_secs(30);

fn vm_dir(lab: &Lab, id: &str) -> PathBuf {
    lab.dir.path().join("state/vms").join(id)
}

async fn boot(vm: &VmProxy<'_>) -> Console {
    vm.start().await.unwrap();
    let mut console = Console::connect(vm.console_port().await.unwrap());
    console.wait_for("GUEST-READY", BOOT).unwrap();
    console
}

/// The pid in the VM's swtpm pid file, and that it is a swtpm serving this VM's state.
fn swtpm_pid(lab: &Lab, id: &str) -> u32 {
    let pidfile = lab.dir.path().join("run").join(id).join("swtpm.pid");
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap_or_else(|e| panic!("{}: {e}", pidfile.display()))
        .trim()
        .parse()
        .unwrap();
    let args = gns3_qemud::procfs::args(pid).join(&b' ');
    let args = String::from_utf8_lossy(&args);
    let state = vm_dir(lab, id).join("tpm");
    assert!(
        args.contains("swtpm socket --tpm2")
            && args.contains(&format!("dir={}", state.display()))
            && args.contains("--terminate"),
        "pid {pid} is not the VM's swtpm: {args}"
    );
    pid
}

#[tokio::test]
async fn uefi_boots_the_guest_and_its_variables_outlive_a_restart() {
    // OVMF itself needs more than the 128 MiB the guest runs in under SeaBIOS.
    let lab = Lab::start().await;
    let settings = guest_settings(&[
        ("Firmware", Variant::from("uefi")),
        ("Ram", Variant::from(256u32)),
    ]);
    let vm = create(&lab.manager, "efi", settings).await;
    let id = vm.id().await.unwrap();
    let vars = vm_dir(&lab, &id).join("efivars.qcow2");
    let cmd = vm.command_line().await.unwrap().join(" ");
    assert!(
        cmd.contains(
            " -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd "
        ) && cmd.contains(&format!(
            " -drive if=pflash,format=qcow2,unit=1,file={} ",
            vars.display()
        )),
        "{cmd}"
    );
    assert!(!vars.exists(), "made before the first start");

    let mut console = boot(&vm).await;
    // Only a kernel started by UEFI firmware has EFI runtime services to show.
    let out = console
        .run(
            "test -d /sys/firmware/efi && echo booted-by-uefi-$((6*7))",
            RUN,
        )
        .unwrap();
    assert!(out.contains("booted-by-uefi-42"), "{out}");
    let first = std::fs::metadata(&vars).unwrap();
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(&vars)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["format"], "qcow2", "{info}");
    vm.stop().await.unwrap();

    // Kept, not made again from the template: the same file (inode). Its content may
    // change: OVMF writes its boot entries into it.
    let mut console = boot(&vm).await;
    let out = console
        .run(
            "test -d /sys/firmware/efi && echo again-by-uefi-$((6*7))",
            RUN,
        )
        .unwrap();
    assert!(out.contains("again-by-uefi-42"), "{out}");
    let second = std::fs::metadata(&vars).unwrap();
    assert_eq!(
        (first.dev(), first.ino()),
        (second.dev(), second.ino()),
        "efivars.qcow2 was made again"
    );
    vm.stop().await.unwrap();

    // Another firmware discards them; a bios VM has no pflash.
    vm.set_firmware("bios").await.unwrap();
    assert!(!vars.exists());
    let cmd = vm.command_line().await.unwrap().join(" ");
    assert!(!cmd.contains("pflash"), "{cmd}");
}

/// Asks the guest's TPM for 8 random bytes (TPM2_GetRandom through /dev/tpm0) and returns
/// the response's header: tag 80 01, size 20, response code 0 when the TPM answers.
fn tpm_answers(console: &mut Console) -> String {
    console
        .run(
            "exec 3<>/dev/tpm0; printf '\\200\\001\\000\\000\\000\\014\\000\\000\\001\\173\\000\\010' >&3; \
             dd bs=64 count=1 <&3 2>/dev/null | od -An -tx1 | head -1 | tr -s ' ' | sed 's/^/TPM-ANSWER/'; exec 3<&-",
            RUN,
        )
        .unwrap()
}

#[tokio::test]
async fn the_guest_sees_a_tpm_whose_swtpm_ends_with_the_vm_and_outlives_the_daemon() {
    let mut lab = Lab::start().await;
    let vm = create(
        &lab.manager,
        "tpm",
        guest_settings(&[("Tpm", Variant::from(true))]),
    )
    .await;
    let id = vm.id().await.unwrap();
    let mut console = boot(&vm).await;
    let out = console.run("ls /sys/class/tpm", RUN).unwrap();
    assert!(out.contains("tpm0"), "{out}");
    let answer = tpm_answers(&mut console);
    assert!(
        answer.contains("TPM-ANSWER 80 01 00 00 00 14 00 00 00 00"),
        "{answer}"
    );
    let pid = swtpm_pid(&lab, &id);
    assert!(pid_alive(pid));
    assert!(vm_dir(&lab, &id).join("tpm").is_dir());
    vm.stop().await.unwrap();
    assert!(!pid_alive(pid), "swtpm {pid} outlived Stop");

    // A restarted daemon finds the swtpm with its QEMU, and ends it at the next Stop.
    let mut console = boot(&vm).await;
    let pid = swtpm_pid(&lab, &id);
    drop(console);
    lab.daemon.crash();
    assert!(pid_alive(pid), "swtpm {pid} died with the daemon");
    lab.daemon.restart(&lab.bus);
    let conn = lab.daemon.connect().await;
    let m = manager(&conn).await;
    let vm = common::vm(&conn, &m.get_vm("tpm").await.unwrap()).await;
    assert_eq!(vm.state().await.unwrap(), "running");
    assert_eq!(swtpm_pid(&lab, &id), pid);
    console = Console::connect(vm.console_port().await.unwrap());
    let answer = tpm_answers(&mut console);
    assert!(
        answer.contains("TPM-ANSWER 80 01 00 00 00 14 00 00 00 00"),
        "{answer}"
    );
    vm.stop().await.unwrap();
    assert!(
        !pid_alive(pid),
        "swtpm {pid} outlived the Stop after a restart"
    );
    vm.delete().await.unwrap();
    assert!(!Path::new(&vm_dir(&lab, &id)).exists());
}

#[tokio::test]
async fn a_failed_start_and_a_delete_leave_no_swtpm() {
    let lab = Lab::start().await;
    let dir = lab.dir.path();
    // QEMU refuses the device after swtpm is up: Start fails, and takes swtpm with it.
    let settings = guest_settings(&[
        ("Tpm", Variant::from(true)),
        ("Options", Variant::from("-device no-such-device")),
    ]);
    let vm = create(&lab.manager, "fails", settings).await;
    let e = vm.start().await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.StartFailed", "{e}");
    assert!(e.to_string().contains("no-such-device"), "{e}");
    assert_eq!(swtpm_pids_under(dir), Vec::<u32>::new());

    // Deleted while it runs: QEMU and swtpm go with it.
    vm.set_options("").await.unwrap();
    vm.start().await.unwrap();
    let id = vm.id().await.unwrap();
    let pid = swtpm_pid(&lab, &id);
    assert_eq!(swtpm_pids_under(dir), [pid]);
    vm.delete().await.unwrap();
    assert!(!pid_alive(pid), "swtpm {pid} outlived Delete");
    assert_eq!(swtpm_pids_under(dir), Vec::<u32>::new());
}

/// uefi-secure: a q35 with SMM whose OVMF has Secure Boot's keys enrolled; the test guest's
/// kernel (Debian's, signed) boots under it, and says Secure Boot is on.
#[tokio::test]
async fn uefi_secure_boots_the_guest_with_secure_boot_on() {
    let lab = Lab::start().await;
    let settings = guest_settings(&[
        ("Firmware", Variant::from("uefi-secure")),
        ("MachineType", Variant::from("q35")),
        ("Ram", Variant::from(256u32)),
    ]);
    let vm = create(&lab.manager, "secure", settings).await;
    let mut console = boot(&vm).await;
    // Its NIC's notice, which comes within a second, is not to come amid the answer.
    console.wait_for("GUEST-NET eth0 ", BOOT).unwrap();
    let out = console
        .run("dmesg | grep -o 'Secure boot [a-z]*'", RUN)
        .unwrap();
    assert_eq!(out, "Secure boot enabled\n");
    vm.stop().await.unwrap();
}
