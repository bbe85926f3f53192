//! `gns3-qemuctl up ring.yml` of a ten-node ring (r0..r9, two adapters each, r_i:eth1 to
//! r_{i+1}:eth0 all round, the test guest, 128 MiB), timed from spawn to exit, when every
//! Start has answered (each once its guest runs); `destroy --yes --lab ring` after it, not
//! timed. The floor, alternating with it: the calls `up` makes for that lab made by the
//! benchmark itself through the same proxies, in up's steps and each step's calls at once
//! (commands/up.rs, commands/link.rs): 10 CreateVM with the settings `lab::plan` gives up
//! (Id and Project included), 10 cables (both ends' AllocateUdpPort at once, then one end's
//! AddUdpTunnel and the other's), 10 Start; then every Delete at once, not timed.
//!
//! What the client does beyond the floor's calls is timed apart, to tell where its time
//! goes: a process of the client that reads the lab file and needs no bus (`graph FILE`),
//! a new connection to the bus, and GetManagedObjects (up makes two: before, and after
//! creating, for the new VMs' paths).

use crate::cli::{ctl, managed_objects, object_manager, SECTION};
use crate::common::{self, VmProxy};
use crate::lab::{ms, BenchLab};
use crate::report::{self, Figure, Report, Target};
use futures_util::future::{join_all, try_join};
use gns3_qemuctl::contract::DEFAULT_ADAPTERS;
use gns3_qemuctl::lab as lab_file;
use gns3_qemuctl::lab::plan::{self, Plan, Wire};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use zbus::{OwnedObjectPath, Variant};

const NODES: usize = 10;
const RUNS: usize = 5;
/// `up` may take this many times the floor's calls.
const LIMIT: f64 = 1.2;
/// Where a tunnel sends to reach another VM's on this host, as `up` has it.
const HERE: &str = "127.0.0.1";

pub fn run(rt: &Runtime) -> Report {
    let dir = tempfile::tempdir().expect("temp dir for the lab file");
    let file = dir.path().join("ring.yml");
    let text = ring_file(common::guest());
    std::fs::write(&file, &text).expect("writing ring.yml");
    let file = file.to_str().expect("a UTF-8 temp path");
    let plan = ring_plan(file, &text);
    let lab = rt.block_on(BenchLab::start());
    let address = lab.daemon.address.clone();
    let om = rt.block_on(object_manager(&lab.conn));

    let (mut up, mut up_cpu, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    let (mut process, mut connect, mut listed) = (Vec::new(), Vec::new(), Vec::new());
    // Run 0 is a warm-up, not counted: the QEMU binary's probe, the page cache.
    for r in 0..=RUNS {
        let by_ctl = || {
            let ran = ctl(&address, &["up", file]);
            let summary = format!("Lab ring is up: {NODES} VMs, {NODES} links.\n");
            assert!(
                ran.stdout.ends_with(&summary),
                "up printed:\n{}",
                ran.stdout
            );
            // The client's GetManagedObjects after creating sees the ten VMs.
            let l = rt.block_on(managed_objects(&om, NODES));
            ctl(&address, &["destroy", "--yes", "--lab", "ring"]);
            (ms(ran.wall), ms(ran.cpu), ms(l))
        };
        let by_calls = || ms(rt.block_on(calls(&lab, &plan)));
        let ((u, uc, l), f) = if r % 2 == 0 {
            let u = by_ctl();
            (u, by_calls())
        } else {
            let f = by_calls();
            (by_ctl(), f)
        };
        let p = ctl(&address, &["graph", file]).wall;
        let c = rt.block_on(new_connection(&address));
        eprintln!("run {r}: up {:.0} ms, the same calls {f:.0} ms", u);
        if r > 0 {
            up.push(u);
            up_cpu.push(uc);
            floor.push(f);
            listed.push(l);
            process.push(ms(p));
            connect.push(ms(c));
        }
    }
    let ratio = report::median(&up) / report::median(&floor);
    Report {
        figures: vec![
            Figure::new(
                SECTION,
                "ring of 10: up's calls by the bench's client (floor)",
                "ms",
                floor,
            ),
            Figure::new(
                SECTION,
                "ring of 10: gns3-qemuctl up, until all run",
                "ms",
                up,
            ),
            Figure::new(
                SECTION,
                "ring of 10: gns3-qemuctl up, its CPU time",
                "ms",
                up_cpu,
            ),
            Figure::new(
                SECTION,
                "gns3-qemuctl graph ring.yml (process, lab file; no bus)",
                "ms",
                process,
            ),
            Figure::new(SECTION, "a new connection to the bus", "ms", connect),
            Figure::new(
                SECTION,
                "GetManagedObjects, the ring's 10 VMs running",
                "ms",
                listed,
            ),
        ],
        targets: vec![Target::new(
            SECTION,
            "ring up / its calls (medians)",
            ratio,
            LIMIT,
            "ratio",
        )],
    }
}

/// The lab file: ten nodes booting the test guest in `guest`, each one's eth1 cabled to the
/// next one's eth0.
fn ring_file(guest: &Path) -> String {
    let mut text = format!(
        "name: ring\n\
         defaults:\n  \
           kernel: {}\n  \
           initrd: {}\n  \
           append: console=ttyS0 panic=-1 quiet\n  \
           ram: 128\n  \
           adapters: 2\n\
         nodes:\n",
        guest.join("vmlinuz").display(),
        guest.join("initrd.gz").display()
    );
    for i in 0..NODES {
        text.push_str(&format!("  r{i}: {{}}\n"));
    }
    text.push_str("links:\n");
    for i in 0..NODES {
        let next = (i + 1) % NODES;
        text.push_str(&format!("  - endpoints: [r{i}:eth1, r{next}:eth0]\n"));
    }
    text
}

/// What `up` does for the ring on a daemon without it: the floor's calls.
fn ring_plan(file: &str, text: &str) -> Plan {
    let lab = lab_file::parse(
        file,
        text,
        &lab_file::contract_properties(),
        DEFAULT_ADAPTERS,
    )
    .unwrap_or_else(|e| panic!("ring.yml: {e:?}"));
    let plan = plan::plan(&lab, &[], DEFAULT_ADAPTERS).expect("the ring's plan");
    assert_eq!(
        (plan.create.len(), plan.wire.len(), plan.start.len()),
        (NODES, NODES, NODES),
        "{plan:?}"
    );
    plan
}

/// The calls `up` makes for `plan`, made directly: the time until every Start has
/// answered. Then every VM is deleted (Delete stops a running VM first), not timed.
async fn calls(lab: &BenchLab, plan: &Plan) -> Duration {
    let t = Instant::now();
    let created = join_all(plan.create.iter().map(|(name, settings)| async move {
        let map: HashMap<&str, Variant<'_>> = settings
            .iter()
            .map(|(k, v)| (k.as_str(), Variant::from(v.clone())))
            .collect();
        let path = lab
            .manager
            .create_vm(name, map)
            .await
            .unwrap_or_else(|e| panic!("CreateVM {name}: {e}"));
        (name.as_str(), path)
    }))
    .await;
    let paths: HashMap<&str, OwnedObjectPath> = created.into_iter().collect();
    join_all(plan.wire.iter().map(|w| cable(lab, &paths, w))).await;
    join_all(plan.start.iter().map(|name| {
        let paths = &paths;
        async move {
            lab.vm(&paths[name.as_str()])
                .await
                .start()
                .await
                .unwrap_or_else(|e| panic!("Start {name}: {e}"));
        }
    }))
    .await;
    let elapsed = t.elapsed();
    let vms: Vec<VmProxy<'static>> = join_all(paths.values().map(|p| lab.vm(p))).await;
    for (vm, done) in vms
        .iter()
        .zip(join_all(vms.iter().map(|vm| vm.delete())).await)
    {
        done.unwrap_or_else(|e| panic!("Delete {}: {e}", vm.inner().path()));
    }
    elapsed
}

/// One cable as `link.rs`'s `wire` makes it.
async fn cable(lab: &BenchLab, paths: &HashMap<&str, OwnedObjectPath>, wire: &Wire) {
    let Wire::Between(a, b) = wire else {
        panic!("the ring has only cables between its nodes, not {wire}");
    };
    let (va, vb) = (
        lab.vm(&paths[a.vm.as_str()]).await,
        lab.vm(&paths[b.vm.as_str()]).await,
    );
    let m = &lab.manager;
    let (pa, pb) = try_join(m.allocate_udp_port(), m.allocate_udp_port())
        .await
        .expect("AllocateUdpPort");
    va.add_udp_tunnel(a.adapter, pa, HERE, pb)
        .await
        .unwrap_or_else(|e| panic!("AddUdpTunnel on {a}: {e}"));
    vb.add_udp_tunnel(b.adapter, pb, HERE, pa)
        .await
        .unwrap_or_else(|e| panic!("AddUdpTunnel on {b}: {e}"));
}

/// The time a new client takes to connect to the bus at `address` (its Hello included).
async fn new_connection(address: &str) -> Duration {
    let t = Instant::now();
    let conn = zbus::connection::Builder::address(address)
        .build()
        .await
        .expect("connecting to the bus");
    let elapsed = t.elapsed();
    drop(conn);
    elapsed
}
