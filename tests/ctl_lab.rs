//! Labs from a file with the built gns3-qemuctl, as a user brings them up: a triangle of
//! test guests that ping each other across their links, the file edited and brought up
//! again (untouched VMs keep running, the moved link carries traffic), down, up, destroy;
//! and `link`/`unlink`/`link set`, whose cable is whole or not there; a lab's OnStop applied
//! by `up` and honoured by `down`. Outputs and exit codes exact. Longer than most files: each test is one story on booted guests.

mod common;

use common::ctl::{ctl, failed, ok, Run, BOOT};
use common::{guest, Console, Lab};
use gns3_qemuctl::lab::plan::vm_id;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SHELL: Duration = Duration::from_secs(30);

/// A lab file `name` in the lab's directory, its nodes booting the test guest.
fn lab_file(lab: &Lab, name: &str, body: &str) -> PathBuf {
    let g = guest();
    let text = format!(
        "name: tri\n\
         defaults:\n  \
           kernel: {}\n  \
           initrd: {}\n  \
           append: console=ttyS0 panic=-1 quiet\n  \
           ram: 128\n  \
           adapters: 2\n  \
           ready: {{console: GUEST-READY}}\n\
         {body}",
        g.join("vmlinuz").display(),
        g.join("initrd.gz").display()
    );
    let path = lab.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const TRIANGLE: &str = "\
nodes:
  r1: {}
  r2: {}
  r3: {}
links:
  - endpoints: [r1:eth0, r2:eth0]
  - endpoints: [r2:eth1, r3:eth0]
  - endpoints: [r3:eth1, r1:eth1]
";

/// The triangle with r3:eth1's cable moved from r1 to a new node r4.
const MOVED: &str = "\
nodes:
  r1: {}
  r2: {}
  r3: {}
  r4: {adapters: 1}
links:
  - endpoints: [r1:eth0, r2:eth0]
  - endpoints: [r2:eth1, r3:eth0]
  - endpoints: [r3:eth1, r4:eth0]
";

fn file(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Property `prop` of `vm`, read with `show`.
fn show(lab: &Lab, vm: &str, prop: &str) -> String {
    let run = ctl(lab, &["show", vm, "-p", prop, "--value"]);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{run:?}");
    run.stdout.trim_end().to_string()
}

/// The guest's console once it has booted, with `addresses` (dev, ip/24) given.
fn booted(lab: &Lab, vm: &str, addresses: &[(&str, &str)]) -> Console {
    let mut console = Console::connect(show(lab, vm, "ConsolePort").parse().unwrap());
    console.wait_for("GUEST-READY", BOOT).unwrap();
    for (dev, ip) in addresses {
        console
            .run(&format!("ip addr add {ip}/24 dev {dev}"), SHELL)
            .unwrap();
    }
    console
}

/// Whether the guest on `console` gets answers from `ip` (the first pings may go to ARP).
fn reaches(console: &mut Console, ip: &str) -> bool {
    (0..5).any(|_| {
        let out = console
            .run(
                &format!("ping -c 2 -W 1 {ip} >/dev/null 2>&1 && echo REACH-YES || echo REACH-NO"),
                SHELL,
            )
            .unwrap();
        out.contains("REACH-YES")
    })
}

fn json(run: &Run) -> serde_json::Value {
    assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{run:?}");
    serde_json::from_str(&run.stdout).unwrap()
}

#[tokio::test]
async fn a_triangle_is_brought_up_edited_down_up_and_destroyed() {
    let lab = Lab::start().await;
    let tri = lab_file(&lab, "tri.yml", TRIANGLE);
    assert_eq!(
        ctl(&lab, &["up", "--wait", "--timeout", "5m", file(&tri)]),
        ok("Created r1, r2, r3.\n\
            Linked r1:eth0 - r2:eth0, r2:eth1 - r3:eth0, r3:eth1 - r1:eth1.\n\
            Started r1, r2, r3.\n\
            Lab tri is up: 3 VMs, 3 links.\n\
            Lab tri is ready.\n")
    );
    // Every console has printed GUEST-READY: ReadConsole's scrollback has it already.
    for r in ["r1", "r2", "r3"] {
        let path = lab.manager.get_vm(r).await.unwrap();
        let out = common::vm(&lab.conn, &path)
            .await
            .read_console(0)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&out).contains("GUEST-READY"), "{r}");
    }
    for r in ["r1", "r2", "r3"] {
        assert_eq!(show(&lab, r, "Id"), vm_id("tri", r));
        assert_eq!(show(&lab, r, "Project"), "tri");
        assert_eq!(show(&lab, r, "State"), "running");
    }
    let links = json(&ctl(&lab, &["links", "--lab", "tri", "--json"]));
    let ends: Vec<(&str, &str)> = links
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["a"].as_str().unwrap(), l["b"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ends,
        [
            ("r1:eth0", "r2:eth0"),
            ("r1:eth1", "r3:eth1"),
            ("r2:eth1", "r3:eth0")
        ],
        "by their first end"
    );
    // Each router pings its two neighbours across the links.
    let mut c1 = booted(&lab, "r1", &[("eth0", "10.0.12.1"), ("eth1", "10.0.13.1")]);
    let mut c2 = booted(&lab, "r2", &[("eth0", "10.0.12.2"), ("eth1", "10.0.23.2")]);
    let mut c3 = booted(&lab, "r3", &[("eth0", "10.0.23.3"), ("eth1", "10.0.13.3")]);
    for (console, peers) in [
        (&mut c1, ["10.0.12.2", "10.0.13.3"]),
        (&mut c2, ["10.0.12.1", "10.0.23.3"]),
        (&mut c3, ["10.0.23.2", "10.0.13.1"]),
    ] {
        for ip in peers {
            assert!(reaches(console, ip), "{ip}");
        }
    }
    let pids: Vec<String> = ["r1", "r2", "r3"]
        .iter()
        .map(|r| show(&lab, r, "Pid"))
        .collect();
    let macs: Vec<String> = ["r1", "r2", "r3"]
        .iter()
        .map(|r| show(&lab, r, "MacAddress"))
        .collect();

    // Up again: nothing to do.
    assert_eq!(
        ctl(&lab, &["up", file(&tri)]),
        ok("Lab tri is up: 3 VMs, 3 links.\n")
    );

    // Edited: r3:eth1's cable goes to a new r4. Only that cable changes.
    let moved = lab_file(&lab, "tri.yml", MOVED);
    assert_eq!(
        ctl(&lab, &["up", file(&moved)]),
        ok("Created r4.\n\
            Unlinked r1:eth1, r3:eth1.\n\
            Linked r3:eth1 - r4:eth0.\n\
            Started r4.\n\
            Lab tri is up: 4 VMs, 3 links.\n")
    );
    let now: Vec<String> = ["r1", "r2", "r3"]
        .iter()
        .map(|r| show(&lab, r, "Pid"))
        .collect();
    assert_eq!(now, pids, "untouched VMs keep running");
    let mut c4 = booted(&lab, "r4", &[("eth0", "10.0.13.4")]);
    assert!(
        reaches(&mut c3, "10.0.13.4"),
        "the moved link carries traffic"
    );
    assert!(reaches(&mut c4, "10.0.13.3"));
    assert!(!reaches(&mut c1, "10.0.13.3"), "r1:eth1 has no cable");
    assert!(reaches(&mut c1, "10.0.12.2"), "r1:eth0 still has its own");
    drop((c1, c2, c3, c4));

    // A node removed from the file is kept, and said so, unless --prune.
    let tri = lab_file(&lab, "tri.yml", TRIANGLE);
    let up = ctl(&lab, &["up", file(&tri)]);
    assert_eq!(
        up,
        Run {
            code: 0,
            stdout: "Unlinked r3:eth1, r4:eth0.\n\
                     Linked r3:eth1 - r1:eth1.\n\
                     Lab tri is up: 3 VMs, 3 links.\n"
                .into(),
            stderr: format!(
                "r4 is in lab tri but not in {}: kept (up --prune deletes it).\n",
                tri.display()
            ),
        }
    );
    assert_eq!(
        ctl(&lab, &["up", "--prune", file(&tri)]),
        ok("Deleted r4.\nLab tri is up: 3 VMs, 3 links.\n")
    );

    // Down stops and keeps; up brings the same VMs back, cables and all.
    assert_eq!(
        ctl(&lab, &["down", file(&tri)]),
        ok("Lab tri is down: 3 VMs stopped.\n")
    );
    assert_eq!(show(&lab, "r2", "State"), "stopped");
    assert_eq!(
        ctl(&lab, &["up", file(&tri)]),
        ok("Started r1, r2, r3.\nLab tri is up: 3 VMs, 3 links.\n")
    );

    // Destroy asks, and without a terminal the answer is no.
    assert_eq!(
        ctl(&lab, &["destroy", "--lab", "tri"]),
        failed(1, "Refusing to destroy lab tri without --yes.\n")
    );
    assert_eq!(
        ctl(&lab, &["destroy", "--yes", file(&tri)]),
        ok("Lab tri is destroyed: 3 VMs deleted.\n")
    );
    assert_eq!(ctl(&lab, &["--no-legend", "list"]), ok(""));
    assert_eq!(
        ctl(&lab, &["down", "--lab", "tri"]),
        failed(4, "No VM in lab 'tri'.\n")
    );
    // Brought up again from nothing: the same ids, so the same MAC addresses.
    let up = ctl(&lab, &["up", "--json", file(&tri)]);
    let done = json(&up);
    assert_eq!(done["created"], serde_json::json!(["r1", "r2", "r3"]));
    assert_eq!(done["lab"], "tri");
    let again: Vec<String> = ["r1", "r2", "r3"]
        .iter()
        .map(|r| show(&lab, r, "MacAddress"))
        .collect();
    assert_eq!(again, macs);
    assert_eq!(
        ctl(&lab, &["destroy", "--yes", "--lab", "tri"]),
        ok("Lab tri is destroyed: 3 VMs deleted.\n")
    );
    assert!(lab.manager.list_vms().await.unwrap().is_empty());
}

/// A node that shuts down (the power button, two minutes to power off) and starts with the
/// host, beside one with the default OnStop.
const STOPS: &str = "\
nodes:
  s1: {on_stop: shutdown, stop_timeout: 120, autostart: true}
  p1: {}
";

/// The consoles of `vms`, once each guest has booted.
fn consoles(lab: &Lab, vms: &[&str]) -> Vec<Console> {
    vms.iter().map(|vm| booted(lab, vm, &[])).collect()
}

/// What the guest on `console` printed until its QEMU was gone.
fn to_the_end(console: &mut Console) -> String {
    console.wait_closed(Duration::from_secs(10)).unwrap()
}

/// `up` applies OnStop, StopTimeout and Autostart from the file; `down` stops each VM as its
/// own OnStop says, `down --poweroff` pulls every cord, and `down --timeout` powers off a
/// guest that ignores the power button, saying so with exit code 3.
#[tokio::test]
async fn down_stops_each_vm_as_its_on_stop_says() {
    let lab = Lab::start().await;
    let stops = lab_file(&lab, "stops.yml", STOPS);
    let up = |lab: &Lab, done: &str| {
        assert_eq!(
            ctl(lab, &["up", "--wait", "--timeout", "5m", file(&stops)]),
            ok(&format!(
                "{done}Lab tri is up: 2 VMs, 0 links.\nLab tri is ready.\n"
            ))
        );
    };
    up(&lab, "Created p1, s1.\nStarted p1, s1.\n");
    for (prop, s1, p1) in [
        ("OnStop", "shutdown", "power-off"),
        ("StopTimeout", "120", "60"),
        ("Autostart", "yes", "no"),
    ] {
        assert_eq!(show(&lab, "s1", prop), s1, "{prop}");
        assert_eq!(show(&lab, "p1", prop), p1, "{prop}");
    }
    let mut c = consoles(&lab, &["s1", "p1"]);
    assert_eq!(
        ctl(&lab, &["down", file(&stops)]),
        ok("Lab tri is down: 2 VMs stopped.\n")
    );
    let (s1, p1) = (to_the_end(&mut c[0]), to_the_end(&mut c[1]));
    assert!(s1.contains("GUEST-POWERDOWN"), "s1 shut down: {s1}");
    assert!(!p1.contains("GUEST-POWERDOWN"), "p1 powered off: {p1}");
    assert_eq!(show(&lab, "s1", "LastError"), "", "no timeout forced s1");
    for vm in ["s1", "p1"] {
        assert_eq!(show(&lab, vm, "State"), "stopped");
    }

    up(&lab, "Started p1, s1.\n");
    let mut c = consoles(&lab, &["s1"]);
    assert_eq!(
        ctl(&lab, &["down", "--poweroff", "--lab", "tri"]),
        ok("Lab tri is down: 2 VMs stopped.\n")
    );
    let s1 = to_the_end(&mut c[0]);
    assert!(!s1.contains("GUEST-POWERDOWN"), "--poweroff: {s1}");

    up(&lab, "Started p1, s1.\n");
    let mut c = consoles(&lab, &["s1"]);
    c[0].ignore_the_power_button();
    let t = std::time::Instant::now();
    assert_eq!(
        ctl(&lab, &["down", "--timeout", "3s", file(&stops)]),
        failed(3, "s1 did not stop within 3s: it was powered off.\n")
    );
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    let s1 = to_the_end(&mut c[0]);
    assert!(!s1.contains("GUEST-POWERDOWN"), "{s1}");
    for vm in ["s1", "p1"] {
        assert_eq!(show(&lab, vm, "State"), "stopped");
    }
    let run = ctl(
        &lab,
        &["down", "--poweroff", "--timeout", "3s", file(&stops)],
    );
    assert_eq!(run.code, 2, "a usage error: {run:?}");
}

/// Every UDP port the daemon still hands out, given back at once.
async fn free_udp_ports(lab: &Lab) -> usize {
    let mut taken = Vec::new();
    while let Ok(p) = lab.manager.allocate_udp_port().await {
        taken.push(p);
    }
    for p in &taken {
        lab.manager.release_udp_port(*p).await.unwrap();
    }
    taken.len()
}

#[tokio::test]
async fn bad_lab_files_and_links_change_nothing() {
    let lab = Lab::start().await;
    let free = free_udp_ports(&lab).await;
    let bad = lab_file(&lab, "bad.yml", "nodes: {r1: {}}\ncolour: red\n");
    let run = ctl(&lab, &["up", file(&bad)]);
    assert_eq!(
        run,
        failed(
            1,
            &format!(
                "{}:10:1: unknown field `colour`, expected one of name, defaults, nodes, links\n",
                bad.display()
            )
        )
    );
    let bad = lab_file(
        &lab,
        "bad.yml",
        "nodes: {r1: {}, r2: {}}\nlinks:\n  - endpoints: [r1:eth0, r2:eth2]\n",
    );
    let run = ctl(&lab, &["up", file(&bad)]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.ends_with(
            ":11:26: 'r2:eth2': node 'r2' has 2 adapter(s), eth0 to eth1; raise its adapters\n"
        ),
        "{run:?}"
    );
    assert_eq!(
        ctl(&lab, &["up", "/nonexistent/lab.yml"]),
        failed(
            1,
            "Failed to read /nonexistent/lab.yml: No such file or directory (os error 2)\n"
        )
    );
    // A node whose name a VM outside the lab has.
    assert_eq!(common::ctl::create(&lab, "r2", &[]), ok(""));
    let tri = lab_file(&lab, "tri.yml", TRIANGLE);
    assert_eq!(
        ctl(&lab, &["up", file(&tri)]),
        failed(
            1,
            "Failed to bring up lab tri: a VM named r2 exists already, in no lab: rename node \
             r2, or delete that VM (gns3-qemuctl delete r2)\n"
        )
    );
    assert_eq!(
        lab.manager.list_vms().await.unwrap().len(),
        1,
        "nothing created"
    );
    assert_eq!(
        ctl(&lab, &["graph", "--lab", "tri"]),
        failed(4, "No VM in lab 'tri'.\n")
    );

    // link: whole or not at all. r3's tunnels would be QEMU's socket netdev, which this
    // daemon refuses: r1's end, made first, is undone and both ports given back.
    assert_eq!(
        common::ctl::create(
            &lab,
            "r3",
            &["--set", "LegacyNetworking=yes", "--adapters", "2"]
        ),
        ok("")
    );
    assert_eq!(common::ctl::create(&lab, "r1", &[]), ok(""));
    let run = ctl(&lab, &["link", "r1:eth0", "r3:eth0"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .starts_with("Failed to link r1:eth0 - r3:eth0: org.gns3.Qemu.Error.InvalidArgument: "),
        "{run:?}"
    );
    assert_eq!(show(&lab, "r1", "Tunnels"), "");
    assert_eq!(free_udp_ports(&lab).await, free, "no port kept");

    assert_eq!(ctl(&lab, &["link", "r1:eth0", "r2:eth0"]), ok(""));
    assert_eq!(
        ctl(&lab, &["--no-legend", "links"])
            .stdout
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>(),
        ["r1:eth0", "r2:eth0"]
    );
    assert_eq!(
        ctl(&lab, &["link", "r3:eth1", "r2:eth0"]),
        failed(
            1,
            "Failed to link: r2:eth0 is linked already (r1:eth0 - r2:eth0): unlink it first \
             with gns3-qemuctl unlink r2:eth0\n"
        )
    );
    assert_eq!(
        ctl(&lab, &["link", "r1:eth1", "r2:eth0"]),
        failed(
            1,
            "Failed to link: r1 has 1 adapter(s), eth0 to eth0: raise its Adapters (stopped) \
             with gns3-qemuctl set r1 Adapters=2\n"
        )
    );
    assert_eq!(
        ctl(&lab, &["link", "r9:eth0", "r2:eth0"]),
        failed(4, "No VM named or with id 'r9'.\n")
    );
    assert_eq!(
        ctl(&lab, &["link", "r1-eth0", "r2:eth0"]),
        failed(
            1,
            "Failed to link: 'r1-eth0' is not an endpoint: write NODE:ethN, as r1:eth0\n"
        )
    );
    // link set: the cable suspended at both ends, then made active again.
    let links = |name: &'static str| {
        let lab = &lab;
        async move {
            let path = lab.manager.get_vm(name).await.unwrap();
            common::vm(&lab.conn, &path).await.links().await.unwrap()
        }
    };
    assert_eq!(ctl(&lab, &["link", "set", "r2:eth0", "suspended"]), ok(""));
    assert_eq!(links("r1").await, [(0, true, true)]);
    assert_eq!(links("r2").await, [(0, true, true)]);
    assert_eq!(ctl(&lab, &["link", "set", "r1:eth0", "active"]), ok(""));
    assert_eq!(links("r1").await, [(0, true, false)]);
    assert_eq!(links("r2").await, [(0, true, false)]);
    let run = ctl(&lab, &["link", "set", "r1:eth0", "down"]);
    assert_eq!(run.code, 2, "a usage error: {run:?}");
    assert!(
        run.stderr.contains("possible values: suspended, active"),
        "{run:?}"
    );
    assert_eq!(ctl(&lab, &["unlink", "r2:eth0"]), ok(""));
    assert_eq!(show(&lab, "r1", "Tunnels"), "");
    assert_eq!(show(&lab, "r2", "Tunnels"), "");
    assert_eq!(
        ctl(&lab, &["unlink", "r2:eth0"]),
        failed(1, "Failed to link: r2:eth0 has no link\n")
    );
    assert_eq!(
        ctl(&lab, &["link", "set", "r2:eth0", "suspended"]),
        failed(
            1,
            "Failed to link: r2:eth0 has no link to suspend or make active: link it first \
             with gns3-qemuctl link\n"
        )
    );
    assert_eq!(
        free_udp_ports(&lab).await,
        free,
        "unlink gives both ports back"
    );
    assert_eq!(
        ctl(&lab, &["links"]),
        ok("A  B  PORTS\n\n0 links listed.\n")
    );
}

#[test]
fn a_lab_file_is_drawn_without_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lab.yml");
    std::fs::write(
        &path,
        "name: pair\nnodes: {a: {}, b: {}}\nlinks:\n  - endpoints: [a:eth0, b:eth0]\n",
    )
    .unwrap();
    // No bus at all: DBUS_SYSTEM_BUS_ADDRESS points nowhere.
    let run = common::ctl::ctl_on(
        "unix:path=/nonexistent",
        &["graph", "--format", "mermaid", file(&path)],
    );
    assert_eq!(
        run,
        ok("---\ntitle: pair\n---\ngraph LR\n  a[\"a\"]\n  b[\"b\"]\n  a ---|\"eth0 - eth0\"| b\n")
    );
}
