//! OnStop save-state on real guests (TCG): a counter running in the guest goes on from
//! where it was after Stop and Start; SavedState follows the disk; DiscardSavedState, a
//! change of a setting the state depends on and a daemon started again on a partial state
//! remove it; a raw drive in place is refused.

mod common;

use common::*;
use std::path::PathBuf;
use std::time::Duration;
use zbus::Variant;

const BOOT: Duration = Duration::from_secs(120);
const SHELL: Duration = Duration::from_secs(30);
const COUNTER: &str = "i=0; while :; do i=$((i+1)); echo COUNT $i; sleep 1; done &";

fn save_state() -> [(&'static str, Variant<'static>); 1] {
    [("OnStop", Variant::from("save-state"))]
}

/// Every `COUNT n` the guest printed in full, in order.
fn counts(text: &str) -> Vec<u64> {
    text.split("COUNT ")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            // A number cut by the end of the text is not whole yet.
            (digits.len() < rest.len())
                .then(|| digits.parse().ok())
                .flatten()
        })
        .collect()
}

fn vm_dir(lab: &Lab, id: &str) -> PathBuf {
    lab.dir.path().join("state/vms").join(id)
}

#[test]
fn counts_are_read_whole() {
    assert_eq!(counts("x COUNT $i; COUNT 1\r\nCOUNT 2\r\nCOUNT 3"), [1, 2]);
}

#[tokio::test]
async fn a_counter_goes_on_after_stop_and_start_and_the_state_is_then_gone() {
    let lab = Lab::start().await;
    let vm = create(&lab.manager, "saver", guest_settings(&save_state())).await;
    let id = vm.id().await.unwrap();
    let dir = vm_dir(&lab, &id);
    assert!(!vm.saved_state().await.unwrap());
    vm.start().await.unwrap();
    let mut console = Console::connect(vm.console_port().await.unwrap());
    console.wait_for("GUEST-READY", BOOT).unwrap();
    console.send_line(COUNTER);
    let mut before = console.wait_for("COUNT 5\r\n", SHELL).unwrap();

    vm.stop().await.unwrap();
    assert_eq!(vm.state().await.unwrap(), "stopped");
    assert!(vm.saved_state().await.unwrap());
    assert_eq!(vm.last_error().await.unwrap(), "");
    before += &console.wait_closed(SHELL).unwrap();
    let last = *counts(&before).last().unwrap();
    assert!(last >= 5, "{before}");
    assert!(snapshot_list(&dir.join("flash.qcow2")).contains("gns3-saved"));
    assert!(snapshot_list(&dir.join("saved-state.qcow2")).contains("gns3-saved"));

    vm.start().await.unwrap();
    assert_eq!(vm.state().await.unwrap(), "running");
    assert!(!vm.saved_state().await.unwrap());
    // Removed before the guest ran on: no later Start can load it again.
    assert!(!dir.join("saved-state.qcow2").exists());
    assert!(!snapshot_list(&dir.join("flash.qcow2")).contains("gns3-saved"));
    let mut console = Console::connect(vm.console_port().await.unwrap());
    let after = console
        .wait_for(&format!("COUNT {}\r\n", last + 3), SHELL)
        .unwrap();
    assert!(
        !after.contains("GUEST-READY"),
        "the guest booted again: {after}"
    );
    assert_eq!(
        counts(&after)[..3],
        [last + 1, last + 2, last + 3],
        "the counter goes on from {last}: {after}"
    );
    // The shell still answers: the guest is whole, not only its counter.
    let out = console.run("echo alive-$((6*7))", SHELL).unwrap();
    assert!(out.contains("alive-42"), "{out}");

    // Saved again, then discarded: the next Start boots afresh.
    vm.stop().await.unwrap();
    assert!(vm.saved_state().await.unwrap());
    vm.discard_saved_state().await.unwrap();
    assert!(!vm.saved_state().await.unwrap());
    assert!(!dir.join("saved-state.qcow2").exists());
    assert!(!snapshot_list(&dir.join("flash.qcow2")).contains("gns3-saved"));
    vm.discard_saved_state().await.unwrap();
    vm.start().await.unwrap();
    let mut console = Console::connect(vm.console_port().await.unwrap());
    let boot = console.wait_for("GUEST-READY", BOOT).unwrap();
    assert!(counts(&boot).is_empty(), "{boot}");
    let e = vm.discard_saved_state().await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.InvalidState", "{e}");
    vm.power_off().await.unwrap();
    assert!(!vm.saved_state().await.unwrap());
}

#[tokio::test]
async fn a_change_it_depends_on_and_a_partial_state_discard_it_saying_so() {
    let mut lab = Lab::start().await;
    let vm = create(&lab.manager, "changer", guest_settings(&save_state())).await;
    let id = vm.id().await.unwrap();
    let dir = vm_dir(&lab, &id);
    vm.start().await.unwrap();
    let mut console = Console::connect(vm.console_port().await.unwrap());
    console.wait_for("GUEST-READY", BOOT).unwrap();
    vm.stop().await.unwrap();
    assert!(vm.saved_state().await.unwrap());

    // A setting the state does not depend on keeps it.
    vm.set_kernel_command_line("console=ttyS0 panic=-1 quiet")
        .await
        .unwrap();
    vm.set_stop_timeout(30).await.unwrap();
    assert!(vm.saved_state().await.unwrap());

    // A daemon started again finds a whole state whole.
    lab.daemon.crash();
    lab.daemon.restart(&lab.bus);
    let conn = lab.daemon.connect().await;
    let path = manager(&conn).await.get_vm("changer").await.unwrap();
    let vm = common::vm(&conn, &path).await;
    assert!(vm.saved_state().await.unwrap());

    vm.set_ram(160).await.unwrap();
    assert!(!vm.saved_state().await.unwrap());
    assert_eq!(
        vm.last_error().await.unwrap(),
        "the saved state was discarded: Ram changed"
    );
    assert!(!dir.join("saved-state.qcow2").exists());
    assert!(!snapshot_list(&dir.join("flash.qcow2")).contains("gns3-saved"));

    // A state cut short (its image gone, as a discard killed midway leaves it): removed
    // when the daemon starts, and LastError says so.
    vm.start().await.unwrap();
    let mut console = Console::connect(vm.console_port().await.unwrap());
    console.wait_for("GUEST-READY", BOOT).unwrap();
    vm.stop().await.unwrap();
    assert!(vm.saved_state().await.unwrap());
    lab.daemon.crash();
    std::fs::remove_file(dir.join("saved-state.qcow2")).unwrap();
    assert!(snapshot_list(&dir.join("flash.qcow2")).contains("gns3-saved"));
    lab.daemon.restart(&lab.bus);
    let conn = lab.daemon.connect().await;
    let path = manager(&conn).await.get_vm("changer").await.unwrap();
    let vm = common::vm(&conn, &path).await;
    assert!(!vm.saved_state().await.unwrap());
    assert!(!snapshot_list(&dir.join("flash.qcow2")).contains("gns3-saved"));
    let e = vm.last_error().await.unwrap();
    assert!(e.contains("was cut short"), "{e}");
    // And the VM boots afresh.
    vm.start().await.unwrap();
    let mut console = Console::connect(vm.console_port().await.unwrap());
    console.wait_for("GUEST-READY", BOOT).unwrap();
    // A disk grown while stopped: loading the state would shrink it back.
    vm.stop().await.unwrap();
    assert!(vm.saved_state().await.unwrap());
    vm.resize_disk("hda", 256 << 20).await.unwrap();
    assert!(!vm.saved_state().await.unwrap());
    assert_eq!(
        vm.last_error().await.unwrap(),
        "the saved state was discarded: the size of hda changed"
    );
    assert!(!snapshot_list(&dir.join("flash.qcow2")).contains("gns3-saved"));
}

#[tokio::test]
async fn a_raw_drive_in_place_is_refused_by_name() {
    let lab = Lab::start().await;
    let base = lab.dir.path().join("disk.raw");
    daemons_raw_image(&base, 16 << 20);
    let raw = Variant::from(base.to_string_lossy().into_owned());
    let want = format!(
        "OnStop save-state needs every writable drive in qcow2, and HdbDiskImage '{}' is raw, \
         used in place (LinkedClone false)",
        base.display()
    );
    let mut settings = guest_settings(&save_state());
    settings.insert("HdbDiskImage", raw.clone());
    settings.insert("LinkedClone", Variant::Bool(false));
    let e = lab.manager.create_vm("raw", settings).await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.InvalidArgument", "{e}");
    assert!(e.to_string().contains(&want), "{e}");

    // Across settings: the drive first, then OnStop, and the other way round.
    let vm = create(
        &lab.manager,
        "raw",
        guest_settings(&[
            ("HdbDiskImage", raw.clone()),
            ("LinkedClone", Variant::Bool(false)),
        ]),
    )
    .await;
    let e = vm.set_on_stop("save-state").await.unwrap_err();
    assert!(e.to_string().contains(&want), "{e}");
    assert_eq!(vm.on_stop().await.unwrap(), "power-off");
    vm.set_linked_clone(true).await.unwrap();
    vm.set_on_stop("save-state").await.unwrap();
    let e = vm.set_linked_clone(false).await.unwrap_err();
    assert!(e.to_string().contains(&want), "{e}");
    assert!(vm.linked_clone().await.unwrap());
}

#[tokio::test]
async fn a_failed_save_and_a_failed_load_leave_the_vm_stopped_with_the_reason() {
    let lab = Lab::start().await;
    let raw = lab.dir.path().join("extra.raw");
    daemons_raw_image(&raw, 1 << 20);
    // A raw drive of Options' own, which the daemon does not vet: QEMU cannot save into it.
    let options = format!("-drive if=none,id=extra,file={},format=raw", raw.display());
    let mut settings = guest_settings(&save_state());
    settings.insert("Options", Variant::from(options));
    let vm = create(&lab.manager, "failing", settings).await;
    let dir = vm_dir(&lab, &vm.id().await.unwrap());
    vm.start().await.unwrap();
    vm.stop().await.unwrap();
    assert_eq!(vm.state().await.unwrap(), "stopped");
    assert!(!vm.saved_state().await.unwrap());
    assert_eq!(
        vm.last_error().await.unwrap(),
        "the state of VM 'failing' could not be saved: drive extra is raw, and only qcow2 \
         drives can hold a saved state; nothing of it was kept"
    );
    assert!(!dir.join("saved-state.qcow2").exists());
    assert!(!snapshot_list(&dir.join("flash.qcow2")).contains("gns3-saved"));
    assert!(qemu_pids_under(lab.dir.path()).is_empty());

    vm.set_options("").await.unwrap();
    vm.start().await.unwrap();
    vm.stop().await.unwrap();
    assert!(vm.saved_state().await.unwrap());
    assert_eq!(vm.last_error().await.unwrap(), "");
    // The state's image replaced by one with the tag and no VM state in it.
    let state = dir.join("saved-state.qcow2");
    std::fs::remove_file(&state).unwrap();
    let path = state.to_str().unwrap();
    qemu_img(&dir, &["create", "-q", "-f", "qcow2", path, "1M"]);
    qemu_img(&dir, &["snapshot", "-c", "gns3-saved", path]);
    let user = daemon_user();
    nix::unistd::chown(&state, Some(user.uid), Some(user.gid)).unwrap();
    let e = vm.start().await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.StartFailed", "{e}");
    assert!(
        e.to_string().contains(
            "VM 'failing' could not be resumed from its saved state (This is a disk-only \
             snapshot"
        ),
        "{e}"
    );
    assert_eq!(vm.state().await.unwrap(), "stopped");
    assert_eq!(vm.pid().await.unwrap(), 0);
    assert!(qemu_pids_under(lab.dir.path()).is_empty());
    assert!(!vm.saved_state().await.unwrap());
    let why = vm.last_error().await.unwrap();
    assert!(
        why.contains("could not be resumed from its saved state"),
        "{why}"
    );
    assert!(!state.exists());
    assert!(!snapshot_list(&dir.join("flash.qcow2")).contains("gns3-saved"));
    // Discarded: the next Start boots afresh.
    vm.start().await.unwrap();
    let mut console = Console::connect(vm.console_port().await.unwrap());
    console.wait_for("GUEST-READY", BOOT).unwrap();

    // A QEMU that answers nothing (SIGSTOP) is stopped hard at StopTimeout.
    vm.set_stop_timeout(2).await.unwrap();
    let pid = vm.pid().await.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let began = std::time::Instant::now();
    vm.stop().await.unwrap();
    let took = began.elapsed();
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert_eq!(vm.state().await.unwrap(), "stopped");
    assert!(!pid_alive(pid));
    assert!(!vm.saved_state().await.unwrap());
    assert_eq!(
        vm.last_error().await.unwrap(),
        "the state of VM 'failing' could not be saved within 2 s (StopTimeout); nothing of \
         it was kept"
    );
    assert!(!state.exists());
}
