//! The host's boots and shutdowns as the daemon sees them: the boot id kept in the state
//! directory tells the first start after a boot (the VMs with Autostart start, then with
//! restore_on_boot those that ran at the last StopAll) from a mere restart (nothing starts);
//! StopAll stops every VM and, with restore_on_boot, keeps which ran. A boot is made by
//! writing another id into the state directory by hand, as a reboot would leave it.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zbus::Variant;

const WAIT: Duration = Duration::from_secs(30);

fn kernel_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .replace('-', "")
}

fn boot_id_file(lab: &Lab) -> PathBuf {
    lab.dir.path().join("state/boot-id")
}

fn restore_file(lab: &Lab) -> PathBuf {
    lab.dir.path().join("state/restore.json")
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Waits until the daemon has kept `id` as the boot whose VMs it started.
async fn boot_done(lab: &Lab, id: &str) {
    let file = boot_id_file(lab);
    let want = format!("{id}\n");
    assert!(
        eventually(WAIT, || async {
            read(&file).as_deref() == Some(want.as_str())
        })
        .await,
        "boot-id is {:?}, not {want:?}; log:\n{}",
        read(&file),
        lab.daemon.log_text()
    );
}

/// A reboot of the host as the state directory sees it: another boot id kept.
fn as_after_a_boot(lab: &mut Lab) {
    let status = lab.daemon.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", lab.daemon.log_text());
    std::fs::write(boot_id_file(lab), format!("{}\n", "0".repeat(32))).unwrap();
    lab.daemon.restart(&lab.bus);
}

async fn state(vm: &VmProxy<'_>) -> String {
    vm.state().await.unwrap()
}

async fn running(vm: &VmProxy<'_>) -> bool {
    eventually(WAIT, || async { state(vm).await == "running" }).await
}

#[tokio::test]
async fn autostart_vms_start_after_a_boot_and_not_after_a_restart() {
    let mut lab = Lab::start().await;
    // The first start of all: no boot id kept yet, so it is one after a boot (with no VM).
    let id = kernel_boot_id();
    boot_done(&lab, &id).await;
    let auto = create(
        &lab.manager,
        "auto",
        guest_settings(&[("Autostart", Variant::from(true))]),
    )
    .await;
    let manual = create(&lab.manager, "manual", guest_settings(&[])).await;
    // Fails at every start: QEMU has no such device.
    let broken = create(
        &lab.manager,
        "broken",
        guest_settings(&[
            ("Autostart", Variant::from(true)),
            ("Options", Variant::from("-device no-such-device")),
        ]),
    )
    .await;

    // A restart within the same boot starts nothing.
    assert_eq!(lab.daemon.terminate().code(), Some(0));
    lab.daemon.restart(&lab.bus);
    let log = lab.daemon.log.clone();
    assert!(
        eventually(WAIT, || async {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("the daemon restarted within the same boot: no VM is started")
        })
        .await,
        "log:\n{}",
        lab.daemon.log_text()
    );
    for vm in [&auto, &manual, &broken] {
        assert_eq!(state(vm).await, "stopped");
    }
    assert!(qemu_pids_under(lab.dir.path()).is_empty());

    // After a boot: the Autostart VM runs, the other stays stopped, the one that cannot
    // start is logged with its LastError and the daemon goes on; the new id is kept.
    as_after_a_boot(&mut lab);
    assert!(running(&auto).await, "log:\n{}", lab.daemon.log_text());
    boot_done(&lab, &id).await;
    assert_eq!(state(&manual).await, "stopped");
    assert_eq!(state(&broken).await, "stopped");
    let last_error = broken.last_error().await.unwrap();
    let log = lab.daemon.log_text();
    // The error carries the tail of qemu.log, so the entry may take several lines.
    let at = log
        .find("the VM did not start (Autostart)")
        .unwrap_or_else(|| panic!("no failed start logged:\n{log}"));
    let entry = &log[at..];
    assert!(
        entry.contains("vm_name=broken") && entry.contains("no-such-device"),
        "{entry}"
    );
    assert!(
        entry.contains(&format!("LastError: {last_error}")),
        "{entry} / {last_error:?}"
    );
    assert!(log.contains("started (Autostart)"), "{log}");
    let pid = auto.pid().await.unwrap();
    assert_eq!(qemu_pids_under(lab.dir.path()), [pid]);

    // And a restart after that adopts the running VM, starting nothing more.
    assert_eq!(lab.daemon.terminate().code(), Some(0));
    lab.daemon.restart(&lab.bus);
    assert_eq!(auto.pid().await.unwrap(), pid);
    assert_eq!(state(&auto).await, "running");
    assert_eq!(state(&manual).await, "stopped");
    assert_eq!(qemu_pids_under(lab.dir.path()), [pid]);
}

#[tokio::test]
async fn stop_all_keeps_what_ran_for_restore_on_boot() {
    let mut lab = Lab::with_config("restore_on_boot = true\n").await;
    let id = kernel_boot_id();
    boot_done(&lab, &id).await;
    let a = create(&lab.manager, "a", guest_settings(&[])).await;
    let b = create(&lab.manager, "b", guest_settings(&[])).await;
    let c = create(&lab.manager, "c", guest_settings(&[])).await;
    let auto = create(
        &lab.manager,
        "auto",
        guest_settings(&[("Autostart", Variant::from(true))]),
    )
    .await;
    a.start().await.unwrap();
    b.start().await.unwrap();
    b.suspend().await.unwrap();
    c.start().await.unwrap();
    c.stop().await.unwrap();

    lab.manager.stop_all().await.unwrap();
    for vm in [&a, &b, &c, &auto] {
        assert_eq!(state(vm).await, "stopped");
    }
    assert!(qemu_pids_under(lab.dir.path()).is_empty());
    let mut ran = vec![a.id().await.unwrap(), b.id().await.unwrap()];
    ran.sort();
    let kept: Vec<String> =
        serde_json::from_str(&read(&restore_file(&lab)).expect("restore.json")).unwrap();
    assert_eq!(kept, ran, "the running and the paused VM, in id order");
    // A second call with nothing running keeps that nothing ran.
    lab.manager.stop_all().await.unwrap();
    assert_eq!(read(&restore_file(&lab)).as_deref(), Some("[]\n"));
    std::fs::write(restore_file(&lab), serde_json::to_string(&ran).unwrap()).unwrap();

    // After a boot: those two run again (the paused one running), beside the Autostart VM;
    // the one stopped before stays stopped, and the list is used up.
    as_after_a_boot(&mut lab);
    for vm in [&a, &b, &auto] {
        assert!(running(vm).await, "log:\n{}", lab.daemon.log_text());
    }
    boot_done(&lab, &id).await;
    assert_eq!(state(&c).await, "stopped");
    assert_eq!(read(&restore_file(&lab)), None);
    let log = lab.daemon.log_text();
    assert_eq!(log.matches("started (restore_on_boot)").count(), 2, "{log}");
    assert_eq!(log.matches("started (Autostart)").count(), 1, "{log}");
    lab.manager.stop_all().await.unwrap();
}

#[tokio::test]
async fn without_restore_on_boot_nothing_is_kept_or_restored() {
    let mut lab = Lab::start().await;
    let id = kernel_boot_id();
    boot_done(&lab, &id).await;
    let a = create(&lab.manager, "a", guest_settings(&[])).await;
    a.start().await.unwrap();
    // What a run with restore_on_boot kept is forgotten, not used.
    std::fs::write(
        restore_file(&lab),
        format!("[\"{}\"]\n", a.id().await.unwrap()),
    )
    .unwrap();
    lab.manager.stop_all().await.unwrap();
    assert_eq!(state(&a).await, "stopped");
    assert_eq!(read(&restore_file(&lab)), None);

    std::fs::write(
        restore_file(&lab),
        format!("[\"{}\"]\n", a.id().await.unwrap()),
    )
    .unwrap();
    as_after_a_boot(&mut lab);
    boot_done(&lab, &id).await;
    assert_eq!(state(&a).await, "stopped");
    assert_eq!(read(&restore_file(&lab)), None);
    assert!(qemu_pids_under(lab.dir.path()).is_empty());
}

#[tokio::test]
async fn stop_all_stops_every_vm_at_once_each_within_its_stop_timeout() {
    let lab = Lab::start().await;
    // No disk and no kernel: the firmware never answers the power button, so each
    // shutdown lasts its StopTimeout and ends in a power-off.
    let shutdown = || {
        std::collections::HashMap::from([
            ("Ram", Variant::from(64u32)),
            ("OnStop", Variant::from("shutdown")),
            ("StopTimeout", Variant::from(2u32)),
        ])
    };
    let a = create(&lab.manager, "a", shutdown()).await;
    let b = create(&lab.manager, "b", shutdown()).await;
    let c = create(&lab.manager, "c", guest_settings(&[])).await;
    for vm in [&a, &b, &c] {
        vm.start().await.unwrap();
    }
    let t0 = std::time::Instant::now();
    lab.manager.stop_all().await.unwrap();
    let took = t0.elapsed();
    for vm in [&a, &b, &c] {
        assert_eq!(state(vm).await, "stopped");
    }
    assert!(qemu_pids_under(lab.dir.path()).is_empty());
    // One after the other would take twice 2 s.
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(3900),
        "StopAll took {took:?}"
    );
    for vm in [&a, &b] {
        assert_eq!(
            vm.last_error().await.unwrap(),
            "the guest did not power off within 2 s of the power button; it was powered off"
        );
    }
    assert_eq!(c.last_error().await.unwrap(), "");
}
