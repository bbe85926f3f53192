//! Ten thousand VMs on one daemon with the shipped configuration's port ranges (the config
//! names only the accelerator): what each per-VM call costs with 1 000 and with 10 000 VMs
//! defined (CreateVM over the last 100 created before each count, then Get, Configure with
//! its PropertiesChanged, AllocateUdpPort + ReleaseUdpPort and Delete, 100 of each; 1 000
//! is visited on the way up and again on the way down), the answers that grow with the VMs
//! (ListVMs, GetManagedObjects) per VM returned, the resident set per VM, a restart's time
//! to READY with 10 000 VMs, and the memory once all are deleted.
//! A cost is flat when its median at 10 000 is within 1.2× of the one at 1 000. The state
//! directory is on tmpfs (/dev/shm): a disk's flush latency, the same whatever the number
//! of VMs but noisy from one call to the next, would hide the daemon's own cost. The lists
//! also report the CPU time the daemon and the bus (dbus-daemon) spent per call, and
//! GetManagedObjects' reply at 10 000 is served again by a bare peer on the same bus: the
//! bus's and the client's floor for those bytes ([`Relay`]).

use crate::lab::{ms, small_vm, time_calls, BenchLab};
use crate::parallel::{all, Op};
use crate::relay::Relay;
use crate::report::{self, Figure, Report, Target};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use zbus::{OwnedObjectPath, Variant};

const SECTION: &str = "scale";
const COUNTS: [usize; 2] = [1_000, 10_000];
/// Calls per figure at each count.
const PROBES: usize = 100;
const LISTS: usize = 20;
/// 10 000 VMs' figure within this many times 1 000's.
const FLAT: f64 = 1.2;
const PER_VM_LIMIT_KIB: f64 = 16.0;
const LIST_LIMIT_MS: f64 = 15.0;
const READY_LIMIT_MS: f64 = 3_000.0;
/// After deleting everything, within this fraction of idle.
const BACK_LIMIT: f64 = 0.10;

const LIST_VMS: (&str, &str, &str, &str) = (
    "org.gns3.Qemu",
    "/org/gns3/Qemu",
    "org.gns3.Qemu.Manager",
    "ListVMs",
);
const MANAGED_OBJECTS: (&str, &str, &str, &str) = (
    "org.gns3.Qemu",
    "/org/gns3/Qemu",
    "org.freedesktop.DBus.ObjectManager",
    "GetManagedObjects",
);

/// The per-VM calls measured at each count, in the order of `Costs`.
const CALLS: [&str; 6] = [
    "CreateVM",
    "Get State",
    "Configure Ram, until its PropertiesChanged",
    "AllocateUdpPort + ReleaseUdpPort",
    "Delete",
    "ListVMs per VM returned",
];

type Costs = [Vec<f64>; 6];

pub fn run(rt: &Runtime) -> Report {
    rt.block_on(async {
        let tmpfs = std::path::Path::new("/dev/shm");
        let mut lab = BenchLab::with_config("accelerator = \"tcg\"\n", Some(tmpfs)).await;
        let idle_anon = warm(&lab).await;
        let idle = lab.memory().rss_kib;
        let mut paths = Vec::new();
        let mut costs = [Costs::default(), Costs::default()];
        let mut lists = [Lists::default(), Lists::default()];
        // Up to 1 000, up to 10 000, and back down to 1 000 after the restarts: the figures
        // at 1 000 are those of both visits, so that a machine's drift over the run weighs
        // on both counts alike.
        let mut rss = 0.0;
        for (i, n) in COUNTS.into_iter().enumerate() {
            eprintln!("defining {} VMs", n - paths.len());
            while paths.len() < n {
                let timed = paths.len() >= n - PROBES;
                let t = Instant::now();
                paths.push(create(&lab, &format!("s-{}", paths.len())).await);
                if timed {
                    costs[i][0].push(us(t.elapsed()));
                }
            }
            rss = lab.memory().rss_kib;
            at(&lab, &paths, &mut costs[i], &mut lists[i]).await;
        }
        let ready: Vec<f64> = (0..3).map(|_| ms(lab.restart())).collect();
        // The daemon trims its heap once it has loaded the VMs, and once deletions pause
        // (src/heap.rs).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let restarted = lab.memory().rss_kib;
        eprintln!(
            "READY after a restart with {} VMs: {ready:?} ms; {restarted:.0} KiB resident",
            paths.len()
        );
        eprintln!("deleting {} of them", paths.len() - COUNTS[0]);
        for p in paths.drain(COUNTS[0]..) {
            lab.vm(&p).await.delete().await.expect("Delete");
        }
        for i in 0..PROBES {
            let t = Instant::now();
            let path = create(&lab, &format!("back-{i}")).await;
            costs[0][0].push(us(t.elapsed()));
            lab.vm(&path).await.delete().await.expect("Delete");
        }
        at(&lab, &paths, &mut costs[0], &mut lists[0]).await;
        for p in &paths {
            lab.vm(p).await.delete().await.expect("Delete");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (after, after_anon) = (lab.memory().rss_kib, lab.memory().anon_kib);
        let mut r = report(&costs, lists, (idle, rss, restarted, after), ready);
        r.figures.extend([
            Figure::new(
                SECTION,
                "anon (heap and stacks), idle",
                "KiB",
                vec![idle_anon],
            ),
            Figure::new(SECTION, "anon, all deleted", "KiB", vec![after_anon]),
        ]);
        r
    })
}

/// ListVMs' and GetManagedObjects' round trips (µs), and the CPU time the daemon and the bus
/// spent per call of each (ms).
#[derive(Default)]
struct Lists {
    list_vms: Vec<f64>,
    managed: Vec<f64>,
    list_cpu: Vec<(f64, f64)>,
    managed_cpu: Vec<(f64, f64)>,
    /// GetManagedObjects' reply served again by a bare peer ([`Relay`]): the round trips, the
    /// bus's CPU per call.
    relayed: Vec<f64>,
    relayed_bus: Vec<f64>,
}

/// The round trips of `LISTS` calls of `call`, and the CPU time the daemon and the bus spent
/// per call.
async fn timed_list(lab: &BenchLab, call: (&str, &str, &str, &str)) -> (Vec<f64>, (f64, f64)) {
    let cpu = (lab.cpu_time(), lab.bus_cpu_time());
    let times = time_calls(&lab.conn, call, &(), LISTS).await;
    let per_call = |d: Duration| ms(d) / LISTS as f64;
    let cpu = (
        per_call(lab.cpu_time() - cpu.0),
        per_call(lab.bus_cpu_time() - cpu.1),
    );
    (times, cpu)
}

/// The calls measured with `paths` defined, added to `c` and `lists`.
async fn at(lab: &BenchLab, paths: &[OwnedObjectPath], c: &mut Costs, lists: &mut Lists) {
    let n = paths.len();
    probe(lab, &paths[n / 2], c).await;
    let (l, list_cpu) = timed_list(lab, LIST_VMS).await;
    c[5].extend(l.iter().map(|us| us / n as f64));
    // Not counted: the first reads every VM's properties, which the next ones copy. Its
    // reply is what the bare peer sends back below.
    let (dest, path, iface, method) = MANAGED_OBJECTS;
    let reply = lab
        .conn
        .call_method(Some(dest), path, Some(iface), method, &())
        .await
        .expect("GetManagedObjects");
    let (m, cpu) = timed_list(lab, MANAGED_OBJECTS).await;
    eprintln!(
        "{n} VMs: ListVMs {:.1} ms (the daemon's CPU {:.1} ms, the bus's {:.1} ms), \
         GetManagedObjects {:.1} ms (the daemon's CPU {:.1} ms, the bus's {:.1} ms)",
        report::median(&l) / 1e3,
        list_cpu.0,
        list_cpu.1,
        report::median(&m) / 1e3,
        cpu.0,
        cpu.1
    );
    if n == COUNTS[COUNTS.len() - 1] {
        let relay = Relay::serve(lab.daemon.connect().await, &reply);
        let bus = lab.bus_cpu_time();
        lists.relayed.extend(relay.time(&lab.conn, LISTS).await);
        lists
            .relayed_bus
            .push(ms(lab.bus_cpu_time() - bus) / LISTS as f64);
    }
    lists.list_vms.extend(l);
    lists.managed.extend(m);
    lists.list_cpu.push(list_cpu);
    lists.managed_cpu.push(cpu);
}

/// The idle daemon's heap and stacks ("anon"), after one VM's whole life has paged in the
/// code every call runs (as the memory section does).
async fn warm(lab: &BenchLab) -> f64 {
    let path = create(lab, "warm-up").await;
    let vm = [lab.vm(&path).await];
    all(&vm, Op::Start).await;
    all(&vm, Op::Stop).await;
    vm[0].delete().await.expect("Delete");
    // After the daemon's trim, as the memory once all are deleted is read.
    tokio::time::sleep(Duration::from_secs(1)).await;
    lab.memory().anon_kib
}

async fn create(lab: &BenchLab, name: &str) -> OwnedObjectPath {
    lab.manager
        .create_vm(name, small_vm())
        .await
        .unwrap_or_else(|e| panic!("CreateVM {name}: {e}"))
}

/// The per-VM calls on one VM of the many (and on VMs created for Delete), `PROBES` of each.
async fn probe(lab: &BenchLab, path: &OwnedObjectPath, c: &mut Costs) {
    let get = (
        "org.gns3.Qemu",
        path.as_str(),
        "org.freedesktop.DBus.Properties",
        "Get",
    );
    c[1].extend(time_calls(&lab.conn, get, &("org.gns3.Qemu.VM", "State"), PROBES).await);
    let vm = lab.vm(path).await;
    let mut changes =
        crate::common::signals(&lab.conn, Some(path.as_str()), "PropertiesChanged").await;
    for i in 0..PROBES {
        let ram = if i % 2 == 0 { 96u32 } else { 64 };
        let t = Instant::now();
        vm.configure(HashMap::from([("Ram", Variant::from(ram))]))
            .await
            .expect("Configure Ram");
        tokio::time::timeout(Duration::from_secs(10), changes.next())
            .await
            .expect("no PropertiesChanged within 10 s after Configure");
        c[2].push(us(t.elapsed()));
    }
    for _ in 0..PROBES {
        let t = Instant::now();
        let port = lab
            .manager
            .allocate_udp_port()
            .await
            .expect("AllocateUdpPort");
        lab.manager
            .release_udp_port(port)
            .await
            .expect("ReleaseUdpPort");
        c[3].push(us(t.elapsed()));
    }
    let mut doomed = Vec::new();
    for i in 0..PROBES {
        doomed.push(lab.vm(&create(lab, &format!("doomed-{i}")).await).await);
    }
    for vm in doomed {
        let t = Instant::now();
        vm.delete().await.expect("Delete");
        c[4].push(us(t.elapsed()));
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn report(
    costs: &[Costs],
    lists: [Lists; 2],
    (idle, rss, restarted, after): (f64, f64, f64, f64),
    ready: Vec<f64>,
) -> Report {
    let mut r = Report::default();
    let vms = |n: usize| format!("{} {:03} VMs", n / 1000, n % 1000);
    for (c, n) in costs.iter().zip(COUNTS) {
        for (name, samples) in CALLS.iter().zip(c) {
            r.figures.push(Figure::new(
                SECTION,
                &format!("{name}, {}", vms(n)),
                "µs",
                samples.clone(),
            ));
        }
    }
    for (name, (few, many)) in CALLS.iter().zip(costs[0].iter().zip(&costs[1])) {
        r.targets.push(Target::new(
            SECTION,
            &format!("{name}: 10 000 / 1 000 VMs (medians)"),
            report::median(many) / report::median(few),
            FLAT,
            "ratio",
        ));
    }
    let last = COUNTS[COUNTS.len() - 1];
    for (lists, n) in lists.into_iter().zip(COUNTS) {
        let at = vms(n);
        let in_ms = |v: Vec<f64>| v.into_iter().map(|us| us / 1e3).collect::<Vec<_>>();
        let (l, m) = (in_ms(lists.list_vms), in_ms(lists.managed));
        for (call, split) in [
            ("ListVMs", &lists.list_cpu),
            ("GetManagedObjects", &lists.managed_cpu),
        ] {
            let daemon = split.iter().map(|c| c.0).collect::<Vec<_>>();
            let bus = split.iter().map(|c| c.1).collect();
            for (whose, cpu) in [("daemon", daemon), ("bus", bus)] {
                r.figures.push(Figure::new(
                    SECTION,
                    &format!("{call}, {at}: the {whose}'s CPU per call"),
                    "ms",
                    cpu,
                ));
            }
        }
        if n == last {
            r.targets.push(Target::new(
                SECTION,
                &format!("ListVMs, {at} (median)"),
                report::median(&l),
                LIST_LIMIT_MS,
                "ms",
            ));
            r.targets.push(Target::new(
                SECTION,
                &format!("GetManagedObjects, {at} (median)"),
                report::median(&m),
                LIST_LIMIT_MS,
                "ms",
            ));
        }
        if n == last {
            r.figures.extend([
                Figure::new(
                    SECTION,
                    &format!("GetManagedObjects' reply, {at}, from a bare peer (floor)"),
                    "ms",
                    in_ms(lists.relayed),
                ),
                Figure::new(
                    SECTION,
                    "the same: the bus's CPU per call",
                    "ms",
                    lists.relayed_bus,
                ),
            ]);
        }
        r.figures
            .push(Figure::new(SECTION, &format!("ListVMs, {at}"), "ms", l));
        r.figures.push(Figure::new(
            SECTION,
            &format!("GetManagedObjects, {at}"),
            "ms",
            m,
        ));
    }
    let per_vm = (rss - idle) / last as f64;
    r.figures.extend([
        Figure::new(SECTION, "resident, idle", "KiB", vec![idle]),
        Figure::new(
            SECTION,
            &format!("resident, {} defined", vms(last)),
            "KiB",
            vec![rss],
        ),
        Figure::new(SECTION, "resident per VM defined", "KiB", vec![per_vm]),
        Figure::new(
            SECTION,
            &format!("resident after the restarts, {} defined", vms(last)),
            "KiB",
            vec![restarted],
        ),
        Figure::new(SECTION, "resident, all deleted", "KiB", vec![after]),
        Figure::new(
            SECTION,
            &format!("restart to READY, {} defined", vms(last)),
            "ms",
            ready.clone(),
        ),
    ]);
    r.targets.extend([
        Target::new(
            SECTION,
            &format!("resident per VM, {} defined", vms(last)),
            per_vm,
            PER_VM_LIMIT_KIB,
            "KiB",
        ),
        Target::new(
            SECTION,
            &format!("restart to READY, {} defined (median)", vms(last)),
            report::median(&ready),
            READY_LIMIT_MS,
            "ms",
        ),
        Target::new(
            SECTION,
            "all deleted / idle - 1",
            after / idle - 1.0,
            BACK_LIMIT,
            "ratio",
        ),
    ]);
    r
}
