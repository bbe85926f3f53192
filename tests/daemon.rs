//! The daemon as a process: flags, configuration, readiness, SIGTERM, restart.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn help_and_bad_flags() {
    let out = Command::new(DAEMON).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--bus",
        "--state-dir",
        "--runtime-dir",
        "--config",
        "--boot-id",
        "--help",
    ] {
        assert!(text.contains(flag), "--help does not mention {flag}");
    }
    let out = Command::new(DAEMON).arg("--frobnicate").output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn a_bad_config_file_is_a_clear_error_and_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "console_port_range = [6000, 5000]\n").unwrap();
    let out = Command::new(DAEMON)
        .args(["--bus", "unix:path=/nonexistent"])
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path().join("s"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("console_port_range"),
        "{err}"
    );

    std::fs::write(&config, "no_such_key = 1\n").unwrap();
    let out = Command::new(DAEMON)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_key"));
}

#[tokio::test]
async fn ready_then_sigterm_leaves_vms_running_and_a_restart_finds_them() {
    let bus = Bus::start();
    let dir = tempfile::tempdir().unwrap();
    // Daemon::start waits for READY=1 on a real NOTIFY_SOCKET datagram socket.
    let mut daemon = Daemon::start(&bus, dir.path());
    let conn = daemon.connect().await;
    let manager = manager(&conn).await;
    let path = manager
        .create_vm("keeper", guest_settings(&[]))
        .await
        .unwrap();
    let other = manager
        .create_vm(
            "other",
            guest_settings(&[("Ram", zbus::Variant::from(200u32))]),
        )
        .await
        .unwrap();
    let vm = vm(&conn, &path).await;
    vm.start().await.unwrap();
    let pid = vm.pid().await.unwrap();
    let ports = (
        vm.console_port().await.unwrap(),
        vm.monitor_port().await.unwrap(),
    );
    let before = manager.list_vms().await.unwrap();
    let other_ram = common::vm(&conn, &other).await.ram().await.unwrap();

    let status = daemon.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log_text());
    assert!(
        pid_alive(pid),
        "SIGTERM to the daemon must leave its VMs running"
    );

    let daemon = Daemon::start_in(&bus, dir.path());
    let conn = daemon.connect().await;
    let manager = common::manager(&conn).await;
    let after = manager.list_vms().await.unwrap();
    let ids = |l: &[(String, String, String, zbus::OwnedObjectPath)]| {
        l.iter()
            .map(|v| (v.0.clone(), v.1.clone(), v.3.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&before), ids(&after));
    let vm = common::vm(&conn, &path).await;
    assert_eq!(
        (
            vm.console_port().await.unwrap(),
            vm.monitor_port().await.unwrap()
        ),
        ports
    );
    assert_eq!(
        common::vm(&conn, &other).await.ram().await.unwrap(),
        other_ram
    );
    assert_eq!(other_ram, 200);
    // The restored ports stay reserved: a new VM asking for one is refused.
    let e = manager
        .create_vm(
            "thief",
            [("ConsolePort", zbus::Variant::from(ports.0))].into(),
        )
        .await
        .unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.PortUnavailable");
}

#[tokio::test]
async fn the_systemd_watchdog_is_pinged_while_the_bus_answers() {
    let bus = Bus::start();
    let dir = tempfile::tempdir().unwrap();
    // WatchdogSec=200ms, as systemd passes it.
    let daemon = Daemon::start_with_env(&bus, dir.path(), &[("WATCHDOG_USEC", "200000")]);
    let pings = daemon
        .notifications(Duration::from_secs(1))
        .iter()
        .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
        .count();
    // One every 100 ms.
    assert!(
        (5..=15).contains(&pings),
        "{pings} pings in 1 s; log:\n{}",
        daemon.log_text()
    );
}

/// What the daemon and its QEMUs make is the daemon's user's only: directories 0700,
/// regular files 0600, sockets without group or other bits, even when the daemon is started
/// with umask 022.
#[tokio::test]
async fn what_the_daemon_makes_is_private_whatever_the_umask() {
    use nix::sys::stat::{umask, Mode};
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let before = umask(Mode::from_bits_truncate(0o022));
    let lab = Lab::start().await;
    umask(before);
    let base = blank_base(lab.dir.path());
    let vm = create(
        &lab.manager,
        "private",
        guest_settings(&[(
            "HdbDiskImage",
            zbus::Variant::from(base.to_string_lossy().into_owned()),
        )]),
    )
    .await;
    vm.start().await.unwrap();
    let mut console = Console::connect(vm.console_port().await.unwrap());
    console
        .wait_for("GUEST-READY", Duration::from_secs(90))
        .unwrap();

    let mut seen = Vec::new();
    let mut todo = vec![lab.dir.path().join("state"), lab.dir.path().join("run")];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        let kind = meta.file_type();
        let ok = if kind.is_dir() {
            todo.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            mode == 0o700
        } else if kind.is_file() {
            mode == 0o600
        } else {
            kind.is_socket() && mode & 0o077 == 0
        };
        assert!(ok, "{} is {mode:o}", path.display());
        seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    seen.sort();
    // What a running VM has: record, disks and log; QEMU's pid file, sockets and the
    // console's scrollback.
    for name in [
        "vm.json",
        "flash.qcow2",
        "hdb_disk.qcow2",
        "qemu.log",
        "qemu.pid",
        "qmp.sock",
        "serial.sock",
        "console",
    ] {
        assert!(seen.iter().any(|s| s == name), "no {name} among {seen:?}");
    }
    vm.stop().await.unwrap();
}
