//! The VM lifecycle on real QEMU guests (TCG), driven through the daemon on a private bus.

mod common;

use common::*;
use std::time::Duration;
use zbus::Variant;

const BOOT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn boot_console_suspend_resume_reload_stop() {
    let lab = Lab::start().await;
    let (dir, conn, manager) = (&lab.dir, &lab.conn, &lab.manager);
    let path = manager
        .create_vm("guest1", guest_settings(&[]))
        .await
        .unwrap();
    let vm = vm(conn, &path).await;
    assert_eq!(vm.state().await.unwrap(), "stopped");
    assert_eq!(vm.pid().await.unwrap(), 0);

    vm.start().await.unwrap();
    // Start returns once QEMU runs the guest.
    assert_eq!(vm.state().await.unwrap(), "running");
    let pid = vm.pid().await.unwrap();
    assert!(pid_alive(pid));
    assert!(
        !vm.accelerated().await.unwrap(),
        "the test config asks for TCG"
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert_eq!(
        args,
        vm.command_line().await.unwrap(),
        "CommandLine is what Start ran"
    );

    let mut console = Console::connect(vm.console_port().await.unwrap());
    console.wait_for("GUEST-READY", BOOT).unwrap();
    let out = console
        .run("echo hello-$((6*7))", Duration::from_secs(30))
        .unwrap();
    assert!(out.contains("hello-42"), "{out}");

    // A second Start on a running VM changes nothing.
    vm.start().await.unwrap();
    assert_eq!(vm.pid().await.unwrap(), pid);

    vm.suspend().await.unwrap();
    assert_eq!(vm.state().await.unwrap(), "paused");
    vm.suspend().await.unwrap();
    // Start on a paused VM resumes it, as the seed did.
    vm.start().await.unwrap();
    assert_eq!(vm.state().await.unwrap(), "running");
    vm.suspend().await.unwrap();
    vm.resume().await.unwrap();
    assert_eq!(vm.state().await.unwrap(), "running");
    let out = console
        .run("echo after-resume", Duration::from_secs(30))
        .unwrap();
    assert!(out.contains("after-resume"), "{out}");

    // The human monitor answers over D-Bus.
    let out = vm.human_monitor_command("info status").await.unwrap();
    assert_eq!(out.trim(), "VM status: running");

    vm.reload().await.unwrap();
    console.wait_for("GUEST-READY", BOOT).unwrap();
    assert_eq!(vm.pid().await.unwrap(), pid, "a reset keeps the same QEMU");

    vm.stop().await.unwrap();
    assert_eq!(vm.state().await.unwrap(), "stopped");
    assert_eq!(vm.pid().await.unwrap(), 0);
    assert_eq!(
        vm.last_error().await.unwrap(),
        "",
        "a requested stop is no error"
    );
    assert!(eventually(Duration::from_secs(5), || async { !pid_alive(pid) }).await);
    let runtime = dir.path().join("run");
    assert!(
        std::fs::read_dir(&runtime).unwrap().next().is_none(),
        "runtime files left behind"
    );
    let log = vm.read_log().await.unwrap();
    assert!(!log.contains("invalid option"), "{log}");

    // Suspend, Resume, Reload need a running VM.
    for (what, e) in [
        ("suspend", vm.suspend().await.unwrap_err()),
        ("resume", vm.resume().await.unwrap_err()),
        ("reload", vm.reload().await.unwrap_err()),
    ] {
        assert_eq!(error_name(&e), "org.gns3.Qemu.Error.InvalidState", "{what}");
    }
    vm.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_option_fails_start_with_qemus_own_words() {
    let lab = Lab::start().await;
    let (dir, conn, manager) = (&lab.dir, &lab.conn, &lab.manager);
    let path = manager
        .create_vm(
            "bad",
            guest_settings(&[("Options", Variant::from("-bogus-option"))]),
        )
        .await
        .unwrap();
    let vm = vm(conn, &path).await;
    let e = vm.start().await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.StartFailed");
    let msg = e.to_string();
    assert!(msg.contains("-bogus-option: invalid option"), "{msg}");
    assert_eq!(vm.state().await.unwrap(), "stopped");
    assert_eq!(vm.pid().await.unwrap(), 0);
    assert!(qemu_pids_under(dir.path()).is_empty(), "a QEMU is left");
    let runtime = dir.path().join("run");
    assert!(
        std::fs::read_dir(&runtime).unwrap().next().is_none(),
        "runtime files left"
    );
}

#[tokio::test]
async fn qemu_killed_from_outside_and_guest_power_off_are_seen() {
    let lab = Lab::start().await;
    let (conn, manager) = (&lab.conn, &lab.manager);
    let path = manager
        .create_vm("victim", guest_settings(&[]))
        .await
        .unwrap();
    let vm = vm(conn, &path).await;

    vm.start().await.unwrap();
    let pid = vm.pid().await.unwrap();
    let cached = cached_vm(conn, &path).await;
    let mut changes = cached.receive_state_changed().await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    stopped_within_a_second(&mut changes).await;
    assert_eq!(vm.exit_status().await.unwrap(), -9);
    let why = vm.last_error().await.unwrap();
    assert!(why.contains("signal 9"), "{why}");

    vm.start().await.unwrap();
    let pid = vm.pid().await.unwrap();
    let mut console = Console::connect(vm.console_port().await.unwrap());
    console.wait_for("GUEST-READY", BOOT).unwrap();
    let mut changes = cached.receive_state_changed().await;
    console.send_line("poweroff -f");
    // The guest takes its time to power off; the second counts from QEMU's exit.
    assert!(eventually(Duration::from_secs(30), || async { !pid_alive(pid) }).await);
    stopped_within_a_second(&mut changes).await;
    assert_eq!(vm.exit_status().await.unwrap(), 0);
    let why = vm.last_error().await.unwrap();
    assert!(why.contains("powered itself off"), "{why}");
    // A clean Start after all that.
    vm.start().await.unwrap();
    vm.stop().await.unwrap();
}

/// The change to `stopped` reaches clients as a signal within a second.
async fn stopped_within_a_second(changes: &mut zbus::proxy::PropertyStream<'_, String>) {
    let seen = tokio::time::timeout(Duration::from_secs(1), async {
        use futures_util::StreamExt;
        while let Some(c) = changes.next().await {
            if c.get().await.unwrap() == "stopped" {
                return;
            }
        }
    })
    .await;
    assert!(seen.is_ok(), "no PropertiesChanged to stopped within 1 s");
}

#[tokio::test]
async fn accelerator_follows_what_the_daemons_user_may_use() {
    if !root_for("to run the daemon as its own user") {
        return;
    }
    let bus = Bus::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let user = daemon_user();
    let daemon = Daemon::start_as(&bus, &dir.path().join("d"), &user);
    let conn = daemon.connect().await;
    let m = manager(&conn).await;
    // No kernel: the firmware runs, which is all a start needs.
    let kvm_usable = nix::unistd::access(
        "/dev/kvm",
        nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
    )
    .is_ok()
        && std::fs::metadata("/dev/kvm")
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.uid() == user.uid.as_raw() || m.mode() & 0o006 == 0o006
            })
            .unwrap_or(false);
    let auto = create(&m, "auto", [("Accelerator", Variant::from("auto"))].into()).await;
    auto.start().await.unwrap();
    assert_eq!(
        auto.accelerated().await.unwrap(),
        kvm_usable,
        "auto picks KVM only where /dev/kvm is usable"
    );
    auto.stop().await.unwrap();
    let tcg = create(&m, "tcg", [("Accelerator", Variant::from("tcg"))].into()).await;
    tcg.start().await.unwrap();
    assert!(!tcg.accelerated().await.unwrap());
    tcg.stop().await.unwrap();
    if kvm_usable {
        cannot_check(&format!(
            "the kvm refusal: /dev/kvm is usable by {}",
            user.name
        ));
        return;
    }
    let kvm = create(&m, "kvm", [("Accelerator", Variant::from("kvm"))].into()).await;
    let e = kvm.start().await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.StartFailed");
    assert!(e.to_string().contains("group kvm"), "{e}");
    assert_eq!(kvm.state().await.unwrap(), "stopped");
}

/// `migrate "exec:…"` on the human monitor runs a command on the host, as the daemon's user,
/// unless QEMU's seccomp sandbox forbids it to spawn. Under the daemon's sandbox it runs
/// nothing; with `qemu_sandbox = false`, the same command does run (which shows the check
/// can fail).
#[tokio::test]
async fn the_monitor_runs_nothing_on_the_host() {
    for sandbox in [true, false] {
        let lab = Lab::with_config(&format!("qemu_sandbox = {sandbox}\n")).await;
        let vm = create(&lab.manager, "sandboxed", guest_settings(&[])).await;
        vm.start().await.unwrap();
        let args = vm.command_line().await.unwrap();
        assert_eq!(
            args.windows(2).any(|w| w[0] == "-sandbox"
                && w[1]
                    == "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"),
            sandbox,
            "{args:?}"
        );
        let escaped = lab.dir.path().join("escaped");
        // The command runs at once where it runs at all; the monitor answers, unless the
        // sandbox ended QEMU for trying.
        let answer = vm
            .human_monitor_command(&format!("migrate \"exec:touch {}\"", escaped.display()))
            .await;
        println!("qemu_sandbox = {sandbox}: migrate exec answered {answer:?}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let state = vm.state().await.unwrap();
        let why = vm.last_error().await.unwrap();
        println!("qemu_sandbox = {sandbox}: after migrate exec the VM is {state}: {why}");
        if sandbox {
            // The sandbox ends a QEMU that tries to spawn, and the VM says so.
            assert_eq!(state, "stopped");
            assert!(why.contains("SIGSYS"), "{why}");
        }
        assert_eq!(
            escaped.exists(),
            !sandbox,
            "qemu_sandbox = {sandbox}: the monitor's command {}",
            if escaped.exists() {
                "ran"
            } else {
                "did not run"
            }
        );
        vm.delete().await.unwrap();
    }
}
