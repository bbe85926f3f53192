//! What a desktop applet sees: GLib's GDBusObjectManagerClient (`tests/applet/follow.py`,
//! through python3-gi) on org.gns3.Qemu. One object-added per CreateVM, every property
//! change, one object-removed per Delete, and nothing else; and a daemon that starts again
//! on existing VMs says nothing about them to whoever follows the name.

mod common;

use common::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;
use zbus::Variant;

const FOLLOW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/applet/follow.py");
/// How long the applet is given to report something that happened, and the quiet after the
/// last event within which nothing more may come.
const EVENT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_secs(1);

struct Applet {
    child: Child,
    lines: Receiver<String>,
    /// The objects it found when it started (`object <path> <interfaces>`).
    initial: Vec<String>,
}

impl Applet {
    fn start(bus: &Bus) -> Applet {
        let mut child = Command::new("/usr/bin/python3")
            .arg(FOLLOW)
            .arg(&bus.address)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("running tests/applet/follow.py (/usr/bin/python3, python3-gi)");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut initial = Vec::new();
        loop {
            let line = lines
                .recv_timeout(EVENT)
                .expect("the applet did not start (python3-gi missing?)");
            if line == "ready" {
                break;
            }
            initial.push(line);
        }
        Applet {
            child,
            lines,
            initial,
        }
    }

    /// Every line it prints until it has been quiet for QUIET, waiting up to EVENT for the
    /// first.
    fn events(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut wait = EVENT;
        while let Ok(line) = self.lines.recv_timeout(wait) {
            out.push(line);
            wait = QUIET;
        }
        out
    }
}

impl Drop for Applet {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn an_applet_sees_each_vm_come_change_and_go_once() {
    let lab = Lab::start().await;
    let applet = Applet::start(&lab.bus);
    assert_eq!(applet.initial, Vec::<String>::new());

    let path = lab
        .manager
        .create_vm("applet", [("Ram", Variant::from(64u32))].into())
        .await
        .unwrap();
    assert_eq!(
        applet.events(),
        [format!("object-added {path} org.gns3.Qemu.VM")]
    );
    let vm = vm(&lab.conn, &path).await;
    vm.set_ram(96).await.unwrap();
    assert_eq!(applet.events(), [format!("changed {path} Ram=96")]);
    // Two settings in one call: one signal with both.
    let both: HashMap<&str, Variant> = [
        ("Ram", Variant::from(128u32)),
        ("CpuThrottling", Variant::from(20u32)),
    ]
    .into();
    vm.configure(both).await.unwrap();
    assert_eq!(
        applet.events(),
        [format!("changed {path} CpuThrottling=20,Ram=128")]
    );
    // A refused change says nothing.
    vm.set_ram(0).await.unwrap_err();
    vm.delete().await.unwrap();
    assert_eq!(applet.events(), [format!("object-removed {path}")]);
}

#[tokio::test]
async fn a_daemon_that_starts_again_says_nothing_of_the_vms_it_finds() {
    use futures_util::StreamExt;
    let mut lab = Lab::start().await;
    let mut paths = Vec::new();
    for name in ["a", "b"] {
        paths.push(lab.manager.create_vm(name, HashMap::new()).await.unwrap());
    }
    lab.daemon.terminate();
    // Everything the daemon's name says under /org/gns3/Qemu from now on.
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender("org.gns3.Qemu")
        .path_namespace("/org/gns3/Qemu")
        .build()
        .unwrap();
    let mut signals = zbus::MessageStream::for_match_rule(rule, &lab.conn, None)
        .await
        .unwrap();
    lab.daemon.restart(&lab.bus);
    // Once the name is owned again, an applet finds both VMs by asking, not by a signal.
    let applet = Applet::start(&lab.bus);
    let mut found = applet.initial.clone();
    found.sort();
    let mut want: Vec<String> = paths
        .iter()
        .map(|p| format!("object {p} org.gns3.Qemu.VM"))
        .collect();
    want.sort();
    assert_eq!(found, want);
    let said = tokio::time::timeout(QUIET, signals.next()).await;
    assert!(
        said.is_err(),
        "the restarted daemon signalled {:?}",
        said.ok()
            .flatten()
            .map(|m| m.map(|m| format!("{:?}", m.header())))
    );
    assert_eq!(applet.events(), Vec::<String>::new());
}
