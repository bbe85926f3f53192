//! Consoles and monitors, served by the daemon, on real guests (TCG): many viewers, the
//! scrollback, slow viewers, a daemon restart, who may connect, and the monitor.

mod common;

use common::users::{gdbus_as, run_as, MEMBER, OUTSIDER};
use common::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use zbus::Variant;

const BOOT: Duration = Duration::from_secs(90);
const RUN: Duration = Duration::from_secs(30);

async fn open(vm: &VmProxy<'_>, options: &[(&'static str, Variant<'static>)]) -> Console {
    let options: HashMap<&str, Variant> = options.iter().cloned().collect();
    let fd = vm.open_console(options).await.unwrap();
    Console::from_fd(fd.into())
}

async fn viewers_become(vm: &VmProxy<'_>, n: u32) -> bool {
    eventually(Duration::from_secs(5), || async {
        vm.console_viewers().await.unwrap() == n
    })
    .await
}

#[tokio::test]
async fn viewers_share_one_console_and_what_nobody_watched_is_replayed() {
    let lab = Lab::start().await;
    let (vm, mut telnet) = booted(&lab, "shared", &[], BOOT).await;
    let mut bus = open(&vm, &[]).await;
    assert!(
        viewers_become(&vm, 2).await,
        "telnet and OpenConsole are two viewers"
    );

    // Both see what either types and what the guest answers.
    let out = telnet.run("echo from-telnet-$((1+1))", RUN).unwrap();
    assert!(out.contains("from-telnet-2"), "{out}");
    bus.wait_for("from-telnet-2", RUN).unwrap();
    let out = bus.run("echo from-bus-$((2+2))", RUN).unwrap();
    assert!(out.contains("from-bus-4"), "{out}");
    telnet.wait_for("from-bus-4", RUN).unwrap();

    // A read-only viewer's keys go nowhere.
    let mut watcher = open(
        &vm,
        &[
            ("ReadOnly", Variant::from(true)),
            ("Replay", Variant::from(false)),
        ],
    )
    .await;
    watcher.send_line("echo typed-by-watcher-$((3*3))");
    let out = telnet.run("echo after-watcher", RUN).unwrap();
    assert!(!out.contains("typed-by-watcher"), "{out}");
    watcher.wait_for("after-watcher", RUN).unwrap();

    // Output printed while nobody watches is kept and replayed.
    telnet.send_line("(sleep 3; for i in 1 2 3 4 5; do echo unseen-$((i*11)); done) &");
    drop((telnet, bus, watcher));
    assert!(viewers_become(&vm, 0).await);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut late = Console::connect(vm.console_port().await.unwrap());
    let replayed = late.wait_for("unseen-55", Duration::from_secs(5)).unwrap();
    for i in 1..=4 {
        assert!(
            replayed.contains(&format!("unseen-{}", i * 11)),
            "{replayed}"
        );
    }
    let kept = String::from_utf8(vm.read_console(0).await.unwrap()).unwrap();
    assert!(
        kept.contains("unseen-11") && kept.contains("unseen-55"),
        "{kept}"
    );
    let tail = vm.read_console(10).await.unwrap();
    assert_eq!(tail.len(), 10);
    assert!(kept.as_bytes().ends_with(&tail));
    // A viewer without replay starts with live output.
    let mut fresh = open(&vm, &[("Replay", Variant::from(false))]).await;
    let out = fresh.run("echo live-only", RUN).unwrap();
    assert!(!out.contains("unseen-"), "{out}");
    vm.stop().await.unwrap();
    assert_eq!(vm.console_viewers().await.unwrap(), 0);
    late.wait_closed(Duration::from_secs(5)).unwrap();
}

#[tokio::test]
async fn a_viewer_that_never_reads_slows_nobody() {
    let lab = Lab::start().await;
    let (vm, mut console) = booted(&lab, "slow", &[], BOOT).await;
    // About 590 KB of output, past a socket's buffers (some 200 KB) and the daemon's
    // backlog (64 reads, small ones at a guest's serial speed).
    let print = "seq 1 100000";
    // The first print also pays for TCG translating the guest's code: not timed.
    console
        .run("seq 1 20000", Duration::from_secs(300))
        .unwrap();
    let started = Instant::now();
    console.run(print, Duration::from_secs(300)).unwrap();
    let alone = started.elapsed();

    let stuck = vm.open_console(HashMap::new()).await.unwrap();
    let started = Instant::now();
    console.run(print, Duration::from_secs(300)).unwrap();
    let beside_stuck = started.elapsed();
    println!("the guest printed in {alone:?} alone, {beside_stuck:?} beside a stuck viewer");
    assert!(
        beside_stuck < alone * 2 + Duration::from_secs(5),
        "the guest printed in {alone:?} alone and {beside_stuck:?} beside a viewer that never reads"
    );
    // The stuck viewer, read at last, is told what it missed.
    let mut late = Console::from_fd(stuck.into());
    let text = late
        .wait_for("bytes of console output skipped", Duration::from_secs(10))
        .unwrap();
    assert!(text.contains("[gns3-qemud: "), "{text}");
    let out = console.run("echo still-here", RUN).unwrap();
    assert!(out.contains("still-here"), "{out}");
    late.wait_for("still-here", RUN).unwrap();
    vm.stop().await.unwrap();
}

#[tokio::test]
async fn the_scrollback_and_the_console_survive_a_daemon_restart() {
    let mut lab = Lab::start().await;
    let (vm, mut console) = booted(&lab, "kept", &[], BOOT).await;
    let pid = vm.pid().await.unwrap();
    let out = console.run("echo before-crash-$((5*5))", RUN).unwrap();
    assert!(out.contains("before-crash-25"), "{out}");
    lab.daemon.crash();
    console.wait_closed(Duration::from_secs(5)).unwrap();
    lab.daemon.restart(&lab.bus);
    let conn = lab.daemon.connect().await;
    let path = manager(&conn).await.get_vm("kept").await.unwrap();
    let vm = common::vm(&conn, &path).await;
    assert_eq!(vm.pid().await.unwrap(), pid, "the QEMU was adopted");
    let kept = String::from_utf8(vm.read_console(0).await.unwrap()).unwrap();
    assert!(kept.contains("before-crash-25"), "{kept}");
    // The console is attached again, both ways, on the same port.
    let mut again = Console::connect(vm.console_port().await.unwrap());
    again
        .wait_for("before-crash-25", Duration::from_secs(5))
        .unwrap();
    let out = again.run("echo after-restart-$((6*6))", RUN).unwrap();
    assert!(out.contains("after-restart-36"), "{out}");
    let out = vm.human_monitor_command("info status").await.unwrap();
    assert!(out.contains("VM status: running"), "{out}");
    vm.stop().await.unwrap();
}

/// Connects to 127.0.0.1:`port` as `user` (with the groups the user database gives it) and
/// returns what the daemon sent within 3 s, or until it closed the connection.
fn connect_as(user: &str, port: u16) -> String {
    let script = "import socket,sys\n\
                  s=socket.create_connection(('127.0.0.1',int(sys.argv[1])))\n\
                  s.settimeout(3)\n\
                  d=b''\n\
                  try:\n  while True:\n    c=s.recv(4096)\n    if not c: break\n    d+=c\n\
                  except socket.timeout:\n  d+=b'<open>'\n\
                  sys.stdout.buffer.write(d)\n";
    // The system's python: one in root's PATH (pyenv) may not be reachable to the user.
    let out = run_as(user, "/usr/bin/python3")
        .args(["-c", script, &port.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn only_root_and_members_reach_a_console_or_a_monitor() {
    if !root_for("to connect as other users") {
        return;
    }
    let lab = Lab::start().await;
    let monitor_port = lab.daemon.ports.end() - 1;
    let (vm, mut console) = booted(
        &lab,
        "guarded",
        &[("MonitorPort", Variant::from(monitor_port))],
        BOOT,
    )
    .await;
    console.run("echo secret-$((7*7))", RUN).unwrap();
    let port = vm.console_port().await.unwrap();

    let refused = connect_as(OUTSIDER, port);
    assert_eq!(
        refused,
        format!(
            "gns3-qemud: only root and members of group gns3 may reach this console; uid {} is neither.\r\n",
            nix::unistd::User::from_name(OUTSIDER).unwrap().unwrap().uid
        )
    );
    let refused = connect_as(OUTSIDER, monitor_port);
    assert!(
        refused.contains("may reach this monitor") && refused.ends_with(".\r\n"),
        "{refused}"
    );

    let member = connect_as(MEMBER, port);
    assert!(
        member.contains("secret-49") && member.ends_with("<open>"),
        "{member}"
    );
    let member = connect_as(MEMBER, monitor_port);
    assert!(
        member.contains("(qemu) ") && member.ends_with("<open>"),
        "{member}"
    );
    // Root's monitor session runs commands.
    let mut monitor = Console::connect(monitor_port);
    monitor.wait_for("(qemu) ", Duration::from_secs(5)).unwrap();
    monitor.send_line("info status");
    monitor
        .wait_for("VM status: running", Duration::from_secs(10))
        .unwrap();

    // The bus refuses the outsider OpenConsole, ReadConsole and HumanMonitorCommand.
    for (method, arg) in [
        ("OpenConsole", "{}"),
        ("ReadConsole", "0"),
        ("HumanMonitorCommand", "'info status'"),
    ] {
        let (ok, text) = gdbus_as(
            OUTSIDER,
            &lab.bus,
            vm.inner().path().as_str(),
            &format!("org.gns3.Qemu.VM.{method}"),
            &[arg],
        );
        assert!(
            !ok && text.contains("org.freedesktop.DBus.Error.AccessDenied"),
            "{method}: {text}"
        );
    }
    assert_eq!(
        vm.console_viewers().await.unwrap(),
        1,
        "root's telnet viewer; a monitor session is no viewer"
    );
    vm.stop().await.unwrap();
}

#[tokio::test]
async fn the_monitor_answers_over_dbus_and_ports_are_held_while_running() {
    let lab = Lab::start().await;
    let vm = create(&lab.manager, "ports", guest_settings(&[])).await;
    let port = vm.console_port().await.unwrap();
    assert_eq!(
        vm.monitor_port().await.unwrap(),
        0,
        "no monitor port unless asked"
    );

    // A port another program took after the VM got it: Start refuses, nothing runs.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let e = vm.start().await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.PortUnavailable", "{e}");
    assert!(
        e.to_string()
            .contains(&format!("127.0.0.1:{port} for ConsolePort")),
        "{e}"
    );
    assert_eq!(vm.state().await.unwrap(), "stopped");
    assert!(qemu_pids_under(lab.dir.path()).is_empty());
    drop(squatter);

    vm.start().await.unwrap();
    let e = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap_err();
    assert_eq!(
        e.kind(),
        std::io::ErrorKind::AddrInUse,
        "the daemon holds the console port"
    );
    let out = vm.human_monitor_command("info status").await.unwrap();
    assert_eq!(out.trim(), "VM status: running");
    vm.suspend().await.unwrap();
    let out = vm.human_monitor_command("info status").await.unwrap();
    assert_eq!(out.trim(), "VM status: paused");

    // Bad input: named errors, nothing changed, no viewer left behind.
    let state = lab.dir.path().join("state");
    let before = snapshot(&state);
    let invalid = "org.gns3.Qemu.Error.InvalidArgument";
    let options = |k: &'static str, v: Variant<'static>| HashMap::from([(k, v)]);
    for (what, e) in [
        (
            "an unknown option",
            vm.open_console(options("Bogus", Variant::from(true))).await,
        ),
        (
            "a string for Replay",
            vm.open_console(options("Replay", Variant::from("yes")))
                .await,
        ),
        (
            "a u32 for ReadOnly",
            vm.open_console(options("ReadOnly", Variant::from(1u32)))
                .await,
        ),
    ] {
        let e = e.unwrap_err();
        assert_eq!(error_name(&e), invalid, "OpenConsole with {what}: {e}");
    }
    let e = vm.read_console(u32::MAX).await.unwrap_err();
    assert_eq!(error_name(&e), invalid, "{e}");
    assert!(e.to_string().contains("console_scrollback"), "{e}");
    for command in ["", "  ", "info status\ninfo kvm", &"x".repeat(5000)] {
        let e = vm.human_monitor_command(command).await.unwrap_err();
        assert_eq!(error_name(&e), invalid, "{command:.20?}: {e}");
    }
    assert_eq!(vm.console_viewers().await.unwrap(), 0);
    assert_eq!(snapshot(&state), before);
    vm.stop().await.unwrap();
    // On a stopped VM there is no console and no monitor.
    let stopped = "org.gns3.Qemu.Error.InvalidState";
    let e = vm.human_monitor_command("info status").await.unwrap_err();
    assert_eq!(error_name(&e), stopped, "{e}");
    let e = vm.open_console(HashMap::new()).await.unwrap_err();
    assert_eq!(error_name(&e), stopped, "{e}");
    let e = vm.read_console(0).await.unwrap_err();
    assert_eq!(error_name(&e), stopped, "{e}");
    let again = std::net::TcpListener::bind(("127.0.0.1", port));
    assert!(again.is_ok(), "the port is let go at stop: {again:?}");
}

/// An RFB 3.8 client's first steps, no authentication: the greeting, a shared ClientInit,
/// and one full framebuffer update. Returns the screen's size.
fn speak_rfb(mut s: impl std::io::Read + std::io::Write) -> (u16, u16) {
    let mut greeting = [0u8; 12];
    s.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"RFB 003.008\n");
    s.write_all(b"RFB 003.008\n").unwrap();
    let mut n = [0u8; 1];
    s.read_exact(&mut n).unwrap();
    let mut types = vec![0u8; n[0].into()];
    s.read_exact(&mut types).unwrap();
    assert!(types.contains(&1), "no 'None' security type in {types:?}");
    s.write_all(&[1]).unwrap();
    let mut result = [0u8; 4];
    s.read_exact(&mut result).unwrap();
    assert_eq!(result, [0; 4], "security handshake failed");
    s.write_all(&[1]).unwrap();
    let mut init = [0u8; 24];
    s.read_exact(&mut init).unwrap();
    let (w, h) = (
        u16::from_be_bytes([init[0], init[1]]),
        u16::from_be_bytes([init[2], init[3]]),
    );
    let mut name = vec![0u8; u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize];
    s.read_exact(&mut name).unwrap();
    let mut request = vec![3, 0, 0, 0, 0, 0];
    request.extend(w.to_be_bytes());
    request.extend(h.to_be_bytes());
    s.write_all(&request).unwrap();
    let mut update = [0u8; 4];
    s.read_exact(&mut update).unwrap();
    assert_eq!(update[0], 0, "not a FramebufferUpdate: {update:?}");
    assert!(
        u16::from_be_bytes([update[2], update[3]]) >= 1,
        "an update of no rectangle"
    );
    (w, h)
}

#[tokio::test]
async fn a_vnc_display_is_served_to_whom_may_drive() {
    let lab = Lab::start().await;
    let vnc_port = lab.daemon.ports.end() - 2;
    let vm = create(
        &lab.manager,
        "screen",
        guest_settings(&[
            ("Display", Variant::from("vnc")),
            ("VncPort", Variant::from(vnc_port)),
        ]),
    )
    .await;
    vm.start().await.unwrap();
    let args = vm.command_line().await.unwrap().join(" ");
    assert!(
        args.contains("-vnc none -vga std -usb -device usb-tablet"),
        "{args}"
    );

    // The same display both ways. The guest may switch modes between the two reads (the
    // BIOS's 720x400 text, then the kernel's 640x480): a few tries, each pair read close
    // together.
    let mut sizes = Vec::new();
    for _ in 0..5 {
        let tcp = std::net::TcpStream::connect(("127.0.0.1", vnc_port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let size = speak_rfb(tcp);
        assert!(size.0 >= 640 && size.1 >= 400, "{size:?}");
        let fd = vm.open_graphics(HashMap::new()).await.unwrap();
        let unix = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(fd));
        unix.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        sizes.push((size, speak_rfb(unix)));
        if sizes.last().is_some_and(|(a, b)| a == b) {
            break;
        }
    }
    assert!(
        sizes.last().is_some_and(|(a, b)| a == b),
        "the TCP port and OpenGraphics showed different displays: {sizes:?}"
    );

    if root_for("to connect as an outsider") {
        let refused = connect_as(OUTSIDER, vnc_port);
        assert!(
            refused.contains("may reach this display") && refused.ends_with(".\r\n"),
            "{refused}"
        );
        let member = connect_as(MEMBER, vnc_port);
        assert!(member.starts_with("RFB 003.008\n"), "{member}");
    }
    let e = vm
        .open_graphics(HashMap::from([("Shared", Variant::from(true))]))
        .await
        .unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.InvalidArgument", "{e}");
    vm.stop().await.unwrap();
    let e = vm.open_graphics(HashMap::new()).await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.InvalidState", "{e}");

    // Without a display: no VncPort, no OpenGraphics.
    let headless = create(&lab.manager, "headless", guest_settings(&[])).await;
    let e = headless.set_vnc_port(vnc_port - 1).await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.InvalidArgument", "{e}");
    assert!(e.to_string().contains("Display = vnc"), "{e}");
    headless.start().await.unwrap();
    let e = headless.open_graphics(HashMap::new()).await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.InvalidState", "{e}");
    assert!(e.to_string().contains("no display"), "{e}");
    headless.stop().await.unwrap();
}

/// `console_access = "any"`: an outsider gets the console, and the daemon said at start it
/// would; `"none"`: no port at all, D-Bus only.
#[tokio::test]
async fn console_access_any_and_none() {
    if !root_for("to connect as an outsider") {
        return;
    }
    for access in ["any", "none"] {
        let lab = Lab::with_config(&format!("console_access = \"{access}\"\n")).await;
        let daemon = &lab.daemon;
        let vm = create(&lab.manager, access, guest_settings(&[])).await;
        let port = match access {
            "any" => vm.console_port().await.unwrap(),
            _ => {
                // No port is handed out that nothing would serve; one asked for is kept.
                assert_eq!(vm.console_port().await.unwrap(), 0);
                vm.set_console_port(daemon.ports.end() - 3).await.unwrap();
                daemon.ports.end() - 3
            }
        };
        vm.start().await.unwrap();
        let mut console = open(&vm, &[]).await;
        console.wait_for("GUEST-READY", BOOT).unwrap();
        console.run("echo marker-$((8*8))", RUN).unwrap();
        let warned = daemon.log_text().contains("console_access = \"any\"");
        let reached = std::net::TcpStream::connect(("127.0.0.1", port));
        if access == "any" {
            assert!(warned, "no warning at start:\n{}", daemon.log_text());
            let outsider = connect_as(OUTSIDER, port);
            assert!(
                outsider.contains("marker-64") && outsider.ends_with("<open>"),
                "{outsider}"
            );
        } else {
            assert!(!warned);
            let e = reached.unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        }
        vm.stop().await.unwrap();
    }
}
