//! gns3-qemuctl on one VM beyond its settings: `cmdline` (a line a shell reads back as the
//! daemon's own argument list), `monitor` (one command, or lines from stdin), `log`,
//! `reload`, `info`, `stop` (as OnStop says, or forced after `--timeout`), `poweroff` and
//! `discard-state`; each against the real daemon and a real guest.

mod common;

use common::ctl::{create, ctl, failed, ok, BOOT};
use common::{ctl_bin, Console, Lab};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test]
async fn cmdline_monitor_log_reload_and_info() {
    let lab = Lab::start().await;
    assert_eq!(create(&lab, "r1", &["--ram", "96"]), ok(""));
    let path = lab.manager.get_vm("r1").await.unwrap();
    let vm = common::vm(&lab.conn, &path).await;

    // The printed line, read back by a shell, is the daemon's own argument list.
    let line = ctl(&lab, &["cmdline", "r1"]);
    assert_eq!((line.code, line.stderr.as_str()), (0, ""));
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("printf '%s\\n' {}", line.stdout.trim_end()))
        .output()
        .unwrap();
    let args: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(args, vm.command_line().await.unwrap());
    assert!(
        line.stdout.contains("'console=ttyS0 panic=-1 quiet'"),
        "{}",
        line.stdout
    );

    assert_eq!(ctl(&lab, &["start", "r1"]), ok(""));
    let mut console = common::Console::connect(vm.console_port().await.unwrap());
    console.wait_for("GUEST-READY", BOOT).unwrap();
    assert_eq!(
        ctl(&lab, &["monitor", "r1", "info", "status"]),
        ok("VM status: running\r\n")
    );
    // Without a command: each line of stdin, answered in turn.
    let mut child = Command::new(ctl_bin())
        .args(["monitor", "r1"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &lab.bus.address)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"info status\n\nstop\ninfo status\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "VM status: running\r\nVM status: paused\r\n"
    );
    let cont = ctl(&lab, &["monitor", "r1", "cont"]);
    assert_eq!((cont.code, cont.stderr.as_str()), (0, ""));

    // Reload resets the guest, which boots again.
    assert_eq!(ctl(&lab, &["reload", "r1"]), ok(""));
    console.wait_for("GUEST-READY", BOOT).unwrap();
    assert_eq!(vm.state().await.unwrap(), "running");

    assert_eq!(ctl(&lab, &["log", "r1"]), ok(&vm.read_log().await.unwrap()));
    assert_eq!(
        ctl(&lab, &["log", "nosuch"]),
        failed(4, "No VM named or with id 'nosuch'.\n")
    );

    let info = ctl(&lab, &["info"]);
    assert_eq!((info.code, info.stderr.as_str()), (0, ""));
    let version = lab.manager.version().await.unwrap();
    let host = lab.manager.console_host().await.unwrap();
    let binaries = lab.manager.qemu_binaries().await.unwrap();
    assert!(!binaries.is_empty());
    let mut want = format!("Version: {version}\nConsoleHost: {host}\n\n");
    let width = binaries.iter().map(|(p, _)| p.len()).max().unwrap().max(4);
    want.push_str(&format!("{:width$}  VERSION\n", "QEMU"));
    for (p, v) in &binaries {
        let v = if v.is_empty() { "-" } else { v };
        want.push_str(&format!("{p:width$}  {v}\n"));
    }
    assert_eq!(info.stdout, want);
    assert_eq!(ctl(&lab, &["stop", "r1"]), ok(""));
}

/// `resize-disk`, `repair-disks` and `reset-disks` on a stopped VM: its flash disk (128 MiB)
/// grown, a shrink refused with the daemon's words, the reset bringing back the first size.
#[tokio::test]
async fn resize_disk_and_reset_disks() {
    let lab = Lab::start().await;
    assert_eq!(create(&lab, "d1", &[]), ok(""));
    assert_eq!(ctl(&lab, &["resize-disk", "d1", "hda", "256M"]), ok(""));
    assert_eq!(
        ctl(&lab, &["resize-disk", "d1", "hda", "200M"]),
        failed(
            1,
            "Failed to resize hda of d1: org.gns3.Qemu.Error.InvalidArgument: hda of VM 'd1' is \
             268435456 bytes already, and a disk only grows: give more than 268435456 bytes\n"
        )
    );
    // Sound: nothing repaired, nothing printed.
    assert_eq!(ctl(&lab, &["repair-disks", "d1"]), ok(""));
    assert_eq!(ctl(&lab, &["reset-disks", "d1"]), ok(""));
    assert_eq!(ctl(&lab, &["resize-disk", "d1", "hda", "200M"]), ok(""));
    for bad in [["d1", "hde", "1G"], ["d1", "hda", "1.5G"]] {
        let run = ctl(&lab, &[&["resize-disk"][..], &bad[..]].concat());
        assert_eq!(run.code, 2, "{bad:?}: {run:?}");
    }
}

/// The test guest's console, once it has booted (connected before it prints: QEMU drops
/// serial output nobody reads, so the port is read as soon as Start returns).
async fn booted(lab: &Lab, vm: &gns3_qemuctl::proxies::VmProxy<'_>, name: &str) -> Console {
    assert_eq!(ctl(lab, &["start", name]), ok(""));
    let mut console = Console::connect(vm.console_port().await.unwrap());
    console.wait_for("GUEST-READY", BOOT).unwrap();
    console
}

/// What the guest printed from now until its console closed with its QEMU.
fn printed_to_the_end(console: &mut Console) -> String {
    console.wait_closed(Duration::from_secs(10)).unwrap()
}

/// `stop` does what OnStop says: with shutdown, the guest sees the power button and powers
/// itself off; `poweroff` pulls the cord whatever OnStop says; `stop --timeout` powers off a
/// guest that ignores the button, long before its StopTimeout, and says so with exit code 3.
#[tokio::test]
async fn stop_shuts_down_poweroff_pulls_the_cord_and_a_timeout_forces() {
    let lab = Lab::start().await;
    assert_eq!(create(&lab, "s1", &["--ram", "96"]), ok(""));
    assert_eq!(
        ctl(&lab, &["set", "s1", "OnStop=shutdown", "StopTimeout=120"]),
        ok("")
    );
    let path = lab.manager.get_vm("s1").await.unwrap();
    let vm = common::vm(&lab.conn, &path).await;
    assert_eq!(vm.on_stop().await.unwrap(), "shutdown");
    assert_eq!(vm.stop_timeout().await.unwrap(), 120);

    let mut console = booted(&lab, &vm, "s1").await;
    assert_eq!(ctl(&lab, &["stop", "s1"]), ok(""));
    assert_eq!(vm.state().await.unwrap(), "stopped");
    assert!(
        printed_to_the_end(&mut console).contains("GUEST-POWERDOWN"),
        "the guest saw the power button"
    );
    assert_eq!(vm.last_error().await.unwrap(), "", "no timeout forced it");

    let mut console = booted(&lab, &vm, "s1").await;
    assert_eq!(ctl(&lab, &["poweroff", "s1"]), ok(""));
    assert_eq!(vm.state().await.unwrap(), "stopped");
    let out = printed_to_the_end(&mut console);
    assert!(!out.contains("GUEST-POWERDOWN"), "no power button: {out}");

    let mut console = booted(&lab, &vm, "s1").await;
    console.ignore_the_power_button();
    let t = Instant::now();
    assert_eq!(
        ctl(&lab, &["stop", "--timeout", "2", "s1"]),
        failed(3, "s1 did not stop within 2s: it was powered off.\n")
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(30),
        "{took:?}: the client's 2 s, not the VM's StopTimeout of 120 s"
    );
    assert_eq!(vm.state().await.unwrap(), "stopped");
    let out = printed_to_the_end(&mut console);
    assert!(!out.contains("GUEST-POWERDOWN"), "{out}");

    // A stopped VM: nothing to do, with or without a limit; a bad limit is a usage error.
    assert_eq!(ctl(&lab, &["stop", "--timeout", "1m", "s1"]), ok(""));
    assert_eq!(ctl(&lab, &["stop", "--timeout", "0", "s1"]), ok(""));
    assert_eq!(ctl(&lab, &["poweroff", "s1"]), ok(""));
    let run = ctl(&lab, &["stop", "--timeout", "soon", "s1"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("'soon' is not a time span"), "{run:?}");
    assert_eq!(
        ctl(&lab, &["poweroff", "nosuch"]),
        failed(4, "No VM named or with id 'nosuch'.\n")
    );
}

/// Property `prop` of `vm` as `show` prints it.
fn shown(lab: &Lab, vm: &str, prop: &str) -> String {
    let run = ctl(lab, &["show", vm, "-p", prop, "--value"]);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{run:?}");
    run.stdout.trim_end().to_string()
}

/// A VM whose OnStop is save-state stops with its state saved, which `show` and `list --json`
/// show as SavedState, even with `stop --timeout`; `discard-state` drops it, and the next
/// start boots afresh.
#[tokio::test]
async fn a_saved_state_is_shown_and_discarded() {
    let lab = Lab::start().await;
    assert_eq!(
        create(&lab, "v1", &["--ram", "96", "--set", "OnStop=save-state"]),
        ok("")
    );
    let path = lab.manager.get_vm("v1").await.unwrap();
    let vm = common::vm(&lab.conn, &path).await;
    assert_eq!(shown(&lab, "v1", "SavedState"), "no");
    let _console = booted(&lab, &vm, "v1").await;
    assert_eq!(ctl(&lab, &["stop", "v1"]), ok(""));
    assert_eq!(vm.state().await.unwrap(), "stopped");
    assert_eq!(shown(&lab, "v1", "SavedState"), "yes");
    let listed = ctl(&lab, &["list", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(listed[0]["SavedState"], serde_json::json!(true), "{listed}");

    assert_eq!(ctl(&lab, &["discard-state", "v1"]), ok(""));
    assert_eq!(shown(&lab, "v1", "SavedState"), "no");
    // Nothing to resume from: the guest boots, and says so again.
    let _console = booted(&lab, &vm, "v1").await;
    // A save is not cut short, however short the limit: the daemon's StopTimeout bounds it.
    assert_eq!(ctl(&lab, &["stop", "--timeout", "0", "v1"]), ok(""));
    assert_eq!(shown(&lab, "v1", "SavedState"), "yes");
    // Resumed from it, which removes it; PowerOff saves nothing.
    assert_eq!(ctl(&lab, &["start", "v1"]), ok(""));
    assert_eq!(shown(&lab, "v1", "SavedState"), "no");
    assert_eq!(ctl(&lab, &["poweroff", "v1"]), ok(""));
    assert_eq!(
        shown(&lab, "v1", "SavedState"),
        "no",
        "PowerOff saves nothing"
    );
    assert_eq!(
        ctl(&lab, &["discard-state", "nosuch"]),
        failed(4, "No VM named or with id 'nosuch'.\n")
    );
}
