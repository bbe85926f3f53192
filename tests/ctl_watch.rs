//! gns3-qemuctl's commands that follow a VM over time: `get`, `console` (through pipes, as
//! scripts use it), `wait`, `watch` (and what they ask of the bus: one match rule, added
//! before the snapshot is read); the lifecycle commands on `--lab` and `--all`; and
//! that piped output has no colours and no pager. The built binary against the real daemon
//! and guest; outputs and exit codes are checked exactly. Past 400 lines: each test boots
//! what it needs once and walks it through many checks, as a person would, which a split
//! would boot again.

mod common;

use common::ctl::{create, ctl, failed, finish, ok, BOOT};
use common::monitor::Monitor;
use common::{ctl_bin, Lab};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// gns3-qemuctl `args` running on, its stdio piped.
fn spawn(lab: &Lab, args: &[&str]) -> Child {
    Command::new(ctl_bin())
        .args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &lab.bus.address)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The lines `from` gives, as they come.
fn lines(from: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn next(rx: &mpsc::Receiver<String>, what: &str) -> String {
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
}

/// `show NAME --json`, as an object.
fn shown(lab: &Lab, name: &str) -> serde_json::Value {
    let run = ctl(lab, &["show", name, "--json"]);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{run:?}");
    serde_json::from_str(&run.stdout).unwrap()
}

#[tokio::test]
async fn watch_prints_each_event_as_it_happens() {
    let lab = Lab::start().await;
    let mut all = spawn(&lab, &["watch", "--json"]);
    let mut people = spawn(&lab, &["watch", "--lab", "lab1"]);
    // Said once subscribed and the snapshot is read: from then on every event is printed.
    for child in [&mut all, &mut people] {
        let said = lines(child.stderr.take().unwrap());
        assert_eq!(
            next(&said, "watch to start"),
            "Watching the VMs of gns3-qemud. Press Ctrl-C to stop."
        );
    }
    let (json, text) = (
        lines(all.stdout.take().unwrap()),
        lines(people.stdout.take().unwrap()),
    );
    assert_eq!(create(&lab, "x1", &[]), ok(""));
    assert_eq!(create(&lab, "r1", &["--set", "Project=lab1"]), ok(""));
    let (mut x1, mut r1) = (shown(&lab, "x1"), shown(&lab, "r1"));
    // InterfacesAdded carries the guarded settings empty (the contract says so).
    for vm in [&mut x1, &mut r1] {
        vm["KernelCommandLine"] = "".into();
    }
    assert_eq!(ctl(&lab, &["start", "r1"]), ok(""));
    let pid = ctl(&lab, &["get", "r1", "Pid"]).stdout.trim().to_string();
    assert_eq!(ctl(&lab, &["stop", "r1"]), ok(""));
    assert_eq!(ctl(&lab, &["delete", "r1"]), ok(""));
    assert_eq!(ctl(&lab, &["delete", "x1"]), ok(""));

    let path = |vm: &serde_json::Value| format!("/org/gns3/Qemu/vm/{}", vm["Id"].as_str().unwrap());
    let event = |kind: &str, vm: &serde_json::Value, changed: serde_json::Value| {
        serde_json::json!({"event": kind, "name": vm["Name"], "path": path(vm),
            "changed": changed, "invalidated": []})
    };
    let pid: u32 = pid.parse().unwrap();
    let want = [
        event("added", &x1, x1.clone()),
        event("added", &r1, r1.clone()),
        event("changed", &r1, serde_json::json!({"State": "starting"})),
        event(
            "changed",
            &r1,
            serde_json::json!({"State": "running", "Pid": pid}),
        ),
        event("changed", &r1, serde_json::json!({"State": "stopping"})),
        event(
            "changed",
            &r1,
            serde_json::json!({"State": "stopped", "Pid": 0}),
        ),
        event("removed", &r1, serde_json::json!({})),
        event("removed", &x1, serde_json::json!({})),
    ];
    for want in want {
        let line = next(&json, &format!("{want}"));
        let got: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(got, want);
    }
    // For people, and only the lab's VM.
    for want in [
        "r1 added".to_string(),
        "r1 State=starting".into(),
        format!("r1 Pid={pid} State=running"),
        "r1 State=stopping".into(),
        "r1 Pid=0 State=stopped".into(),
        "r1 removed".into(),
    ] {
        assert_eq!(next(&text, &want), want);
    }
    // Ctrl-C ends a watch, as a success.
    for mut child in [all, people] {
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        let status = common::wait_timeout(&mut child, Duration::from_secs(10));
        assert_eq!(status.code(), Some(0));
    }
    // Nothing more was printed.
    assert_eq!(json.recv_timeout(Duration::from_secs(1)).ok(), None);
    assert_eq!(text.try_recv().ok(), None);
}

/// The one match rule of `watch` and `wait` (src/ctl/commands/events.rs), as the bus gets it.
const RULE: &str = "type='signal',sender='org.gns3.Qemu',path_namespace='/org/gns3/Qemu'";

/// The method calls a client sent, in the order the bus got them, as (destination,
/// interface, member, arguments), from what a [`Monitor`] saw of it; and checks that its
/// AddMatch was answered before its GetManagedObjects was sent, so that no signal sent after
/// the snapshot can be missed.
fn calls_of(
    client: &str,
    seen: &[serde_json::Value],
) -> Vec<(String, String, String, serde_json::Value)> {
    let field = |m: &serde_json::Value, k: &str| m[k].as_str().unwrap_or_default().to_string();
    let calls: Vec<_> = seen
        .iter()
        .enumerate()
        .filter(|(_, m)| field(m, "type") == "method_call" && field(m, "sender") == client)
        .collect();
    let at = |member: &str| {
        let found: Vec<_> = calls
            .iter()
            .filter(|(_, m)| field(m, "member") == member)
            .collect();
        assert_eq!(found.len(), 1, "{member} calls of {client}: {seen:#?}");
        *found[0]
    };
    let (added, add) = at("AddMatch");
    let (read, get) = at("GetManagedObjects");
    assert!(add["cookie"].as_u64() < get["cookie"].as_u64(), "{seen:#?}");
    let answered = seen
        .iter()
        .position(|m| {
            field(m, "type") == "method_return"
                && field(m, "destination") == client
                && m["reply_cookie"] == add["cookie"]
        })
        .unwrap_or_else(|| panic!("AddMatch of {client} unanswered: {seen:#?}"));
    assert!(added < answered && answered < read, "{seen:#?}");
    calls
        .iter()
        .map(|(_, m)| {
            let f = |k| field(m, k);
            (
                f("destination"),
                f("interface"),
                f("member"),
                m["payload"]["data"].clone(),
            )
        })
        .collect()
}

/// What `watch` and `wait` send: Hello, the one AddMatch, then GetManagedObjects. No
/// RemoveMatch: zbus queues it as a task when the stream drops, and the client's
/// current-thread runtime ends with the command, before running it (the bus drops the
/// rule with the connection).
fn subscribed_then_read() -> Vec<(String, String, String, serde_json::Value)> {
    let bus = "org.freedesktop.DBus";
    let call = |to: &str, iface: &str, member: &str, args| {
        (to.to_string(), iface.to_string(), member.to_string(), args)
    };
    vec![
        call(bus, bus, "Hello", serde_json::json!([])),
        call(bus, bus, "AddMatch", serde_json::json!([RULE])),
        call(
            "org.gns3.Qemu",
            "org.freedesktop.DBus.ObjectManager",
            "GetManagedObjects",
            serde_json::json!([]),
        ),
    ]
}

#[tokio::test]
async fn watch_and_wait_add_one_match_rule_before_the_snapshot() {
    let lab = Lab::start().await;
    assert_eq!(create(&lab, "r1", &[]), ok(""));

    let mut monitor = Monitor::start(&lab.bus);
    let mut watch = spawn(&lab, &["watch", "--json"]);
    let said = lines(watch.stderr.take().unwrap());
    assert_eq!(
        next(&said, "watch to start"),
        "Watching the VMs of gns3-qemud. Press Ctrl-C to stop."
    );
    let pid = nix::unistd::Pid::from_raw(watch.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = common::wait_timeout(&mut watch, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    let (client, seen) = monitor.one_client();
    assert_eq!(calls_of(&client, &seen), subscribed_then_read());
    drop(monitor);

    let mut monitor = Monitor::start(&lab.bus);
    assert_eq!(
        ctl(
            &lab,
            &["wait", "r1", "--state", "running", "--timeout", "1s"]
        ),
        failed(3, "Timed out after 1s: r1 is stopped, not running.\n")
    );
    let (client, seen) = monitor.one_client();
    assert_eq!(calls_of(&client, &seen), subscribed_then_read());
    drop(monitor);

    assert_eq!(ctl(&lab, &["start", "r1"]), ok(""));
    let mut monitor = Monitor::start(&lab.bus);
    assert_eq!(ctl(&lab, &["wait", "r1", "--state", "running"]), ok(""));
    let (client, seen) = monitor.one_client();
    assert_eq!(calls_of(&client, &seen), subscribed_then_read());
    drop(monitor);
    assert_eq!(ctl(&lab, &["stop", "r1"]), ok(""));
}

#[tokio::test]
async fn get_lab_and_all_and_plain_output_through_pipes() {
    let lab = Lab::start().await;
    let lab1 = ["--ram", "128", "--set", "Project=lab1"];
    assert_eq!(create(&lab, "r1", &lab1), ok(""));
    assert_eq!(create(&lab, "r2", &lab1), ok(""));
    assert_eq!(create(&lab, "x1", &[]), ok(""));

    assert_eq!(
        ctl(&lab, &["get", "r1", "Ram", "Name", "Project"]),
        ok("128\nr1\nlab1\n")
    );
    let got = ctl(&lab, &["get", "r1", "Ram", "Tunnels", "--json"]);
    assert_eq!((got.code, got.stderr.as_str()), (0, ""));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&got.stdout).unwrap(),
        serde_json::json!({"Ram": 128, "Tunnels": []})
    );
    assert_eq!(
        ctl(&lab, &["get", "r1", "Ram", "Rams"]),
        failed(1, "r1 has no property 'Rams'.\n")
    );
    assert_eq!(
        ctl(&lab, &["get", "nosuch", "Ram"]),
        failed(4, "No VM named or with id 'nosuch'.\n")
    );

    let ports: Vec<String> = ["r1", "r2", "x1"]
        .iter()
        .map(|n| {
            ctl(&lab, &["get", n, "ConsolePort"])
                .stdout
                .trim()
                .to_string()
        })
        .collect();
    assert_eq!(
        ctl(&lab, &["--no-legend", "list", "--lab", "lab1"]),
        ok(&format!(
            "r1  lab1  stopped  {}  128M  1  0\nr2  lab1  stopped  {}  128M  1  0\n",
            ports[0], ports[1]
        ))
    );
    let nolab = failed(4, "No VM in lab 'nolab'.\n");
    assert_eq!(ctl(&lab, &["list", "--lab", "nolab"]), nolab);
    assert_eq!(ctl(&lab, &["start", "--lab", "nolab"]), nolab);
    for usage in [
        &["start", "--all", "r1"][..],
        &["start", "--lab", "lab1", "--all"],
        &["stop", "--lab", "lab1", "r1"],
    ] {
        let run = ctl(&lab, usage);
        assert_eq!(
            (run.code, run.stdout.as_str()),
            (2, ""),
            "{usage:?}: {run:?}"
        );
        assert!(run.stderr.starts_with("error: "), "{usage:?}: {run:?}");
    }

    let states = |lab: &Lab| {
        ["r1", "r2", "x1"].map(|n| ctl(lab, &["get", n, "State"]).stdout.trim().to_string())
    };
    assert_eq!(ctl(&lab, &["start", "--lab", "lab1"]), ok(""));
    assert_eq!(states(&lab), ["running", "running", "stopped"]);

    // Piped output has no colours, with NO_COLOR or without, nor does an error; and no
    // pager runs, whichever the environment names.
    let marker = lab.dir.path().join("pager-ran");
    let pager = format!("touch {}", marker.display());
    for no_color in [None, Some("1")] {
        for args in [
            &["list"][..],
            &["show", "r1"],
            &["get", "r1", "State"],
            &["start", "nosuch"],
        ] {
            let mut command = Command::new(ctl_bin());
            command
                .args(args)
                .env("DBUS_SYSTEM_BUS_ADDRESS", &lab.bus.address)
                .env("SYSTEMD_PAGER", &pager)
                .env("PAGER", &pager)
                .env_remove("NO_COLOR");
            if let Some(v) = no_color {
                command.env("NO_COLOR", v);
            }
            let run = finish(command);
            assert!(!run.stdout.is_empty() || !run.stderr.is_empty(), "{args:?}");
            assert!(
                !run.stdout.contains('\x1b') && !run.stderr.contains('\x1b'),
                "{run:?}"
            );
        }
    }
    let listed = ctl(&lab, &["--no-legend", "list"]);
    assert!(listed.stdout.contains("r1  lab1  running"), "{listed:?}");
    assert!(!marker.exists());

    // On a terminal (script(1) gives it one): STATE in colour unless NO_COLOR, and the
    // pager, unless --no-pager or an empty or `cat` pager.
    let on_terminal = |args: &str, env: &[(&str, &str)]| {
        let mut command = Command::new("script");
        command
            .args([
                "-qec",
                &format!("{} {args}", ctl_bin().display()),
                "/dev/null",
            ])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &lab.bus.address)
            .env_remove("NO_COLOR")
            .env_remove("SYSTEMD_PAGER")
            .env_remove("PAGER")
            .stdin(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        let run = finish(command);
        assert_eq!(run.code, 0, "{args}: {run:?}");
        run.stdout
    };
    let green = "\x1b[0;32mrunning\x1b[0m";
    let shown = on_terminal("--no-legend --no-pager list", &[]);
    assert!(shown.contains(&format!("r1  lab1  {green}  ")), "{shown:?}");
    assert!(shown.contains("x1  -     stopped  "), "{shown:?}");
    let shown = on_terminal("--no-legend --no-pager list", &[("NO_COLOR", "")]);
    assert!(!shown.contains('\x1b'), "{shown:?}");
    assert!(shown.contains("r1  lab1  running  "), "{shown:?}");
    let tee = format!("tee {}", marker.display());
    on_terminal("--no-pager list", &[("PAGER", &tee)]);
    on_terminal("list", &[("SYSTEMD_PAGER", "cat"), ("PAGER", &tee)]);
    on_terminal("list", &[("PAGER", "")]);
    assert!(!marker.exists());
    // A pager that is not there is no failure.
    let shown = on_terminal("list", &[("PAGER", "/nonexistent/pager")]);
    assert!(shown.contains("3 VMs listed."), "{shown:?}");
    // The pager gets the output whole, colours and all (less shows them with LESS=R).
    on_terminal("get r1 State", &[("PAGER", &tee)]);
    assert!(!marker.exists(), "get is not paged");
    on_terminal("--no-legend list --lab lab1", &[("PAGER", &tee)]);
    // less's options are systemd's, or $SYSTEMD_LESS: never the caller's $LESS.
    let less = lab.dir.path().join("less-options");
    let script = lab.dir.path().join("env-pager");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$LESS\" >> {}\ncat\n", less.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script = script.to_str().unwrap();
    on_terminal("info", &[("PAGER", script), ("LESS", "X")]);
    on_terminal("info", &[("PAGER", script), ("SYSTEMD_LESS", "FRX")]);
    assert_eq!(std::fs::read_to_string(&less).unwrap(), "FRSXMK\nFRX\n");
    let paged = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(
        paged,
        format!(
            "r1  lab1  {green}  {}  128M  1  0\nr2  lab1  {green}  {}  128M  1  0\n",
            ports[0], ports[1]
        )
    );

    assert_eq!(ctl(&lab, &["stop", "--all"]), ok(""));
    assert_eq!(states(&lab), ["stopped", "stopped", "stopped"]);
    assert_eq!(ctl(&lab, &["start", "--all"]), ok(""));
    assert_eq!(states(&lab), ["running", "running", "running"]);
    assert_eq!(ctl(&lab, &["stop", "--lab", "lab1"]), ok(""));
    assert_eq!(states(&lab), ["stopped", "stopped", "running"]);
    assert_eq!(ctl(&lab, &["delete", "--force", "--lab", "lab1"]), ok(""));
    assert_eq!(
        ctl(&lab, &["--no-legend", "list"]),
        ok(&format!("x1  -  running  {}  256M  1  0\n", ports[2]))
    );
    assert_eq!(ctl(&lab, &["stop", "x1"]), ok(""));
}

#[tokio::test]
async fn console_through_pipes_and_wait() {
    let lab = Lab::start().await;
    assert_eq!(create(&lab, "r1", &[]), ok(""));
    let stopped = |what: &str| {
        failed(
            3,
            &format!("Failed to {what}: r1 is stopped. Start it first: `gns3-qemuctl start r1`.\n"),
        )
    };
    assert_eq!(
        ctl(&lab, &["console", "r1"]),
        stopped("open the console of r1")
    );
    assert_eq!(
        ctl(&lab, &["monitor", "r1", "info", "status"]),
        stopped("run 'info status' on the monitor of r1")
    );
    assert_eq!(
        ctl(&lab, &["wait", "r1", "--timeout", "1s"]),
        failed(3, "Timed out after 1s: r1 is stopped, not running.\n")
    );
    assert_eq!(
        ctl(&lab, &["wait", "nosuch"]),
        failed(4, "No VM named or with id 'nosuch'.\n")
    );
    let bad = ctl(&lab, &["wait", "r1", "--console", "GUEST-(READY"]);
    assert_eq!((bad.code, bad.stdout.as_str()), (1, ""), "{bad:?}");
    assert!(
        bad.stderr
            .starts_with("Invalid regular expression 'GUEST-(READY': "),
        "{bad:?}"
    );
    let bad = ctl(&lab, &["wait", "r1", "--timeout", "soon"]);
    assert_eq!((bad.code, bad.stdout.as_str()), (2, ""), "{bad:?}");

    // A wait started before the VM is: it sees the start, then the guest's marker.
    let boot = format!("{}s", BOOT.as_secs());
    let waiting = spawn(
        &lab,
        &["wait", "r1", "--console", "GUEST-READY", "--timeout", &boot],
    );
    let running = spawn(&lab, &["wait", "r1", "--state", "running"]);
    assert_eq!(ctl(&lab, &["start", "r1"]), ok(""));
    for child in [running, waiting] {
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            (
                out.status.code(),
                out.stdout.as_slice(),
                out.stderr.as_slice()
            ),
            (Some(0), &b""[..], &b""[..])
        );
    }
    // Printed before this wait began: Replay counts it.
    assert_eq!(
        ctl(
            &lab,
            &[
                "wait",
                "r1",
                "--console",
                "GUEST-R[A-Z]+Y",
                "--state",
                "running"
            ]
        ),
        ok("")
    );
    assert_eq!(
        ctl(
            &lab,
            &[
                "wait",
                "r1",
                "--console",
                "NEVER-PRINTED",
                "--timeout",
                "2s"
            ]
        ),
        failed(
            3,
            "Timed out after 2s: r1 is running, its console has not shown 'NEVER-PRINTED'.\n"
        )
    );

    // Through pipes: what is written goes to the guest's shell, its answer comes out.
    let mut console = spawn(&lab, &["console", "r1", "--no-replay"]);
    let out = lines(console.stdout.take().unwrap());
    let mut stdin = console.stdin.take().unwrap();
    stdin.write_all(b"echo FROM-$((6*7))-GUEST\n").unwrap();
    loop {
        if next(&out, "the guest's answer").trim_end_matches('\r') == "FROM-42-GUEST" {
            break;
        }
    }
    // Its stdin's end ends it.
    drop(stdin);
    let status = common::wait_timeout(&mut console, Duration::from_secs(20));
    let mut said = String::new();
    console
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert_eq!((status.code(), said.as_str()), (Some(0), ""));

    // As a script writes it: the answer is printed before the copy ends.
    let mut script = Command::new("sh");
    script
        .arg("-c")
        .arg(format!(
            "echo 'echo SCRIPT-$((7*6))' | {} console r1 --no-replay",
            ctl_bin().display()
        ))
        .env("DBUS_SYSTEM_BUS_ADDRESS", &lab.bus.address);
    let run = finish(script);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{run:?}");
    assert!(
        run.stdout.lines().any(|l| l.trim_end() == "SCRIPT-42"),
        "{run:?}"
    );

    // On a terminal (script(1) gives it one): raw mode, Enter as the terminal sends it,
    // Ctrl-] detaches (exit 0: stty runs), and the terminal is as it was after (cooked).
    let mut terminal = Command::new("script")
        .args([
            "-qec",
            &format!("{} console r1 --no-replay && stty -a", ctl_bin().display()),
            "/dev/null",
        ])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &lab.bus.address)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(terminal.stdout.take().unwrap());
    let mut keys = terminal.stdin.take().unwrap();
    assert_eq!(
        next(&out, "the banner").trim_end_matches('\r'),
        "Connected to the console of r1. Press Ctrl-] to detach."
    );
    keys.write_all(b"echo TTY-$((5*5))\r").unwrap();
    while next(&out, "the answer on the terminal").trim_end_matches('\r') != "TTY-25" {}
    keys.write_all(b"\x1d").unwrap();
    let mut after = Vec::new();
    loop {
        let line = next(&out, "stty -a");
        after.push(line.clone());
        if line.contains("icanon") {
            break;
        }
    }
    let status = common::wait_timeout(&mut terminal, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{after:?}");
    let settings = after.last().unwrap();
    assert!(
        settings.split_whitespace().any(|s| s == "icanon")
            && !settings.split_whitespace().any(|s| s == "-icanon"),
        "{after:?}"
    );
    drop(keys);

    // The VM stopping closes the console: the copy ends, as a success.
    let mut console = spawn(&lab, &["console", "r1", "--read-only"]);
    let out = lines(console.stdout.take().unwrap());
    while !next(&out, "the scrollback").contains("GUEST-READY") {}
    assert_eq!(ctl(&lab, &["stop", "r1"]), ok(""));
    let status = common::wait_timeout(&mut console, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        ctl(
            &lab,
            &["wait", "r1", "--state", "stopped", "--timeout", "5s"]
        ),
        ok("")
    );
}
