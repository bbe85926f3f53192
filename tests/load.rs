//! Many clients at once: 8 clients × 200 random calls on 20 VMs while one more VM is stuck
//! (its QEMU SIGSTOPped), beside a thousand VMs defined and left alone (`common::bystanders`;
//! ListVMs answers with them all). Every call is answered, by a result or a named error, in bounded
//! time; the stuck VM delays no one else; the invariants hold afterwards; the daemon's
//! memory stays flat, under the storm and over 1 000 create/delete cycles.

mod common;

use common::invariants;
use common::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zbus::Variant;

const CLIENTS: usize = 8;
const CALLS: usize = 200;
const VMS: usize = 20;
const MAX_UP: usize = 6;
/// A call that waited on the stuck VM would take this long.
use gns3_qemud::vm::actor::QMP_TIMEOUT;

fn settings() -> HashMap<&'static str, Variant<'static>> {
    HashMap::from([
        ("Ram", Variant::from(32u32)),
        ("Adapters", Variant::from(2u32)),
    ])
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// What a call may answer under load: a result, or an error a client can act on. A VM
/// deleted by another client between GetVM and the call is an unknown object.
fn acceptable(e: &zbus::Error) -> bool {
    let name = error_name(e);
    (name.starts_with("org.gns3.Qemu.Error.") && !name.ends_with(".Internal"))
        || name == "org.freedesktop.DBus.Error.UnknownObject"
        // A Get (org.freedesktop.DBus.Properties) of a VM another client deletes meanwhile:
        // zbus's Properties finds the object gone once it runs.
        || name == "org.freedesktop.DBus.Error.UnknownInterface"
}

struct Shared {
    /// Names of the VMs the clients started and did not stop yet: at most MAX_UP.
    up: Mutex<HashSet<String>>,
    /// (operation, latency) of every call, and the errors by name.
    latencies: Mutex<Vec<(&'static str, Duration)>>,
    /// How many of each error, and the first message.
    errors: Mutex<BTreeMap<String, (u32, String)>>,
}

/// One client: `CALLS` random operations on the VMs named vm-0..vm-19.
async fn client(seed: u64, conn: zbus::Connection, shared: Arc<Shared>) {
    let mut rng = Rng(seed);
    let m = manager(&conn).await;
    for _ in 0..CALLS {
        let name = format!("vm-{}", rng.below(VMS));
        let kind = rng.below(10);
        let began = Instant::now();
        let (what, result): (&'static str, zbus::Result<()>) = match kind {
            0 => ("ListVMs", m.list_vms().await.map(drop)),
            _ => {
                let path = match m.get_vm(&name).await {
                    Ok(p) => p,
                    Err(e) => {
                        // Deleted and not yet made again by another client.
                        assert_eq!(error_name(&e), "org.gns3.Qemu.Error.NotFound", "{e}");
                        continue;
                    }
                };
                let vm = vm(&conn, &path).await;
                match kind {
                    1 => {
                        let allowed = {
                            let mut up = shared.up.lock().unwrap();
                            up.len() < MAX_UP && up.insert(name.clone())
                        };
                        if !allowed {
                            continue;
                        }
                        let r = vm.start().await;
                        if r.is_err() && vm.state().await.is_ok_and(|s| s == "stopped") {
                            shared.up.lock().unwrap().remove(&name);
                        }
                        ("Start", r)
                    }
                    2 => {
                        let r = vm.stop().await;
                        if r.is_ok() {
                            shared.up.lock().unwrap().remove(&name);
                        }
                        ("Stop", r)
                    }
                    3 => ("Suspend", vm.suspend().await),
                    4 => ("Resume", vm.resume().await),
                    5 => {
                        // Ram needs a stopped VM; the priority changes live.
                        let s = HashMap::from([match rng.below(2) {
                            0 => ("Ram", Variant::from([32u32, 48][rng.below(2)])),
                            _ => (
                                "ProcessPriority",
                                Variant::from(["normal", "low"][rng.below(2)]),
                            ),
                        }]);
                        ("Configure", vm.configure(s).await)
                    }
                    6 => {
                        let r = match m.allocate_udp_port().await {
                            Ok(port) => {
                                let adapter = rng.below(2) as u32;
                                let r = vm.add_udp_tunnel(adapter, port, "127.0.0.1", 40000).await;
                                let _ = m.release_udp_port(port).await;
                                r
                            }
                            Err(e) => Err(e),
                        };
                        ("AddUdpTunnel", r)
                    }
                    7 => (
                        "RemoveUdpTunnel",
                        vm.remove_udp_tunnel(rng.below(2) as u32).await,
                    ),
                    8 => ("State", vm.state().await.map(drop)),
                    _ => {
                        let r = vm.delete().await;
                        if r.is_ok() {
                            shared.up.lock().unwrap().remove(&name);
                            let made = m.create_vm(&name, settings()).await;
                            // Another client may have made it again first.
                            if let Err(e) = &made {
                                assert!(acceptable(e), "CreateVM: {e}");
                            }
                        }
                        ("Delete", r)
                    }
                }
            }
        };
        let took = began.elapsed();
        shared.latencies.lock().unwrap().push((what, took));
        if let Err(e) = result {
            assert!(acceptable(&e), "{what} on {name}: {e}");
            let mut errors = shared.errors.lock().unwrap();
            let entry = errors
                .entry(error_name(&e))
                .or_insert_with(|| (0, format!("{what}: {e}")));
            entry.0 += 1;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

#[tokio::test]
async fn eight_clients_and_a_stuck_vm() {
    let lab = Lab::start().await;
    let (dir, m, pid) = (lab.dir.path(), &lab.manager, lab.daemon.pid());
    let rss_idle = rss_kib(pid);
    for n in 0..VMS {
        m.create_vm(&format!("vm-{n}"), settings()).await.unwrap();
    }
    let beside = bystanders::count();
    bystanders::define(m, beside).await;
    let stuck = create(m, "stuck", settings()).await;
    stuck.start().await.unwrap();
    let stuck_pid = nix::unistd::Pid::from_raw(stuck.pid().await.unwrap() as i32);
    nix::sys::signal::kill(stuck_pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let rss_before = rss_kib(pid);

    let shared = Arc::new(Shared {
        up: Mutex::default(),
        latencies: Mutex::default(),
        errors: Mutex::default(),
    });
    let began = Instant::now();
    // The stuck VM's caller, beside the others: every call on it waits for QMP in vain.
    let stuck_calls = tokio::spawn({
        let stuck = stuck.clone();
        async move {
            let mut answers = Vec::new();
            for _ in 0..2 {
                let t = Instant::now();
                let e = stuck.suspend().await.unwrap_err();
                answers.push((error_name(&e), t.elapsed()));
            }
            answers
        }
    });
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        // A connection per client, as separate programs would have.
        let conn = lab.daemon.connect().await;
        clients.push(tokio::spawn(client(
            0x9e37_79b9_7f4a_7c15 ^ (c as u64 + 1),
            conn,
            shared.clone(),
        )));
    }
    for c in clients {
        c.await.unwrap();
    }
    let storm = began.elapsed();
    for (name, took) in stuck_calls.await.unwrap() {
        assert_eq!(name, "org.gns3.Qemu.Error.Timeout");
        assert!(took >= QMP_TIMEOUT && took < QMP_TIMEOUT * 3, "{took:?}");
    }
    nix::sys::signal::kill(stuck_pid, nix::sys::signal::Signal::SIGCONT).unwrap();

    let mut latencies: Vec<Duration> = shared
        .latencies
        .lock()
        .unwrap()
        .iter()
        .map(|(_, d)| *d)
        .collect();
    latencies.sort();
    let slowest = shared
        .latencies
        .lock()
        .unwrap()
        .iter()
        .max_by_key(|(_, d)| *d)
        .copied();
    println!(
        "{} calls by {CLIENTS} clients in {storm:.1?}: p50 {:.1?}, p99 {:.1?}, slowest {slowest:?}; errors {:#?}",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        shared.errors.lock().unwrap()
    );
    // The stuck VM held no one else: nothing waited as long as its QMP timeout.
    let (what, took) = slowest.unwrap();
    assert!(took < QMP_TIMEOUT, "{what} took {took:?}");
    let rss_after = rss_kib(pid);
    println!(
        "daemon RSS: {rss_idle} KiB idle, {rss_before} KiB with {} VMs, {rss_after} KiB after the storm",
        VMS + 1 + beside
    );

    assert!(
        lab.daemon.child.is_some() && pid_alive(pid),
        "the daemon died"
    );
    let log = lab.daemon.log_text();
    assert!(!log.contains("panicked"), "{log}");
    let seen = invariants::check(dir, m).await;
    let left = seen.values().filter(|v| bystanders::is_one(v.name()));
    assert_eq!(left.count(), beside, "the VMs beside are all there");
    invariants::check_ports(m, &seen, &lab.daemon.ports, &lab.daemon.udp_ports).await;
}

#[tokio::test]
async fn memory_stays_flat_over_a_thousand_creates_and_deletes() {
    let lab = Lab::start().await;
    let (m, pid) = (&lab.manager, lab.daemon.pid());
    let cycle = |n: usize| async move {
        let vm = create(m, &format!("cycle-{n}"), settings()).await;
        vm.delete().await.unwrap();
    };
    // Warm up: the allocator's pools and zbus's caches reach their working size.
    for n in 0..100 {
        cycle(n).await;
    }
    // The daemon trims its heap once deletions pause (src/heap.rs): both readings after one.
    let settle = Duration::from_secs(1);
    tokio::time::sleep(settle).await;
    let before = rss_kib(pid);
    let began = Instant::now();
    for n in 0..1000 {
        cycle(n).await;
    }
    tokio::time::sleep(settle).await;
    let after = rss_kib(pid);
    println!(
        "1000 create/delete cycles in {:.1?}: daemon RSS {before} KiB -> {after} KiB",
        began.elapsed()
    );
    assert!(
        after < before + 1024,
        "RSS grew by {} KiB",
        after.saturating_sub(before)
    );
    assert!(m.list_vms().await.unwrap().is_empty());
}
