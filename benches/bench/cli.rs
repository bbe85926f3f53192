//! The client, gns3-qemuctl, as a user runs it: the release binary spawned on the private
//! bus (which it finds as the system bus, through DBUS_SYSTEM_BUS_ADDRESS), its stdout a
//! pipe read to the end, timed from spawn to exit. Here `list` and `list --json` of 1 000
//! VMs, beside the floor: the same GetManagedObjects call made by the benchmark's own
//! client, on a connection it holds, its reply decoded as the client decodes it. To tell
//! where the time goes: the call's round trip alone (not decoded), the daemon's CPU time
//! per call, and the client's own CPU time. Then `up` of a ten-node ring, against the same
//! calls made directly (ring.rs).
//!
//! Runs alternate with the floor's, so a shared machine's drifting load weighs on both.

use crate::common;
use crate::lab::{ms, small_vm, time_calls, BenchLab};
use crate::report::{self, Figure, Report, Target};
use crate::ring;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use zbus::fdo::ObjectManagerProxy;

pub const SECTION: &str = "cli";
const VMS: usize = 1_000;
const RUNS: usize = 20;
/// `list` of 1 000 VMs, spawn to exit.
const LIST_LIMIT_MS: f64 = 50.0;
/// Round trips alone per run, for the daemon's CPU time.
const RAW_CALLS: usize = 5;
const GET_MANAGED_OBJECTS: (&str, &str, &str, &str) = (
    "org.gns3.Qemu",
    "/org/gns3/Qemu",
    "org.freedesktop.DBus.ObjectManager",
    "GetManagedObjects",
);

pub fn run(rt: &Runtime) -> Report {
    eprintln!("client: {}", common::ctl_bin().display());
    let mut report = list(rt);
    let ring = ring::run(rt);
    report.figures.extend(ring.figures);
    report.targets.extend(ring.targets);
    report
}

fn list(rt: &Runtime) -> Report {
    let lab = rt.block_on(BenchLab::start());
    eprintln!("defining {VMS} VMs");
    rt.block_on(lab.create_many("vm", VMS, &small_vm()));
    let om = rt.block_on(object_manager(&lab.conn));
    let address = lab.daemon.address.clone();
    let (dest, path, iface, method) = GET_MANAGED_OBJECTS;
    let reply = rt
        .block_on(
            lab.conn
                .call_method(Some(dest), path, Some(iface), method, &()),
        )
        .expect("GetManagedObjects");
    eprintln!(
        "GetManagedObjects of {VMS} VMs: a reply of {} KiB",
        reply.body().len() / 1024
    );
    let (mut floor, mut raw, mut daemon_cpu) = (Vec::new(), Vec::new(), Vec::new());
    let (mut table, mut table_cpu, mut json) = (Vec::new(), Vec::new(), Vec::new());
    // Run 0 is a warm-up, not counted: the page cache, and the daemon's first reply.
    for r in 0..=RUNS {
        let call = || ms(rt.block_on(managed_objects(&om, VMS)));
        let (f, t) = if r % 2 == 0 {
            let f = call();
            (f, list_table(&address))
        } else {
            let t = list_table(&address);
            (call(), t)
        };
        let j = list_json(&address);
        // The daemon's CPU time counts in clock ticks: over several calls, per call.
        let cpu = lab.cpu_time();
        let g = rt.block_on(time_calls(&lab.conn, GET_MANAGED_OBJECTS, &(), RAW_CALLS));
        let d = ms(lab.cpu_time() - cpu) / RAW_CALLS as f64;
        if r > 0 {
            floor.push(f);
            raw.extend(g.iter().map(|us| us / 1e3));
            daemon_cpu.push(d);
            table.push(ms(t.wall));
            table_cpu.push(ms(t.cpu));
            json.push(j);
        }
    }
    eprintln!(
        "list of {VMS} VMs: {:.1} ms, --json {:.1} ms; GetManagedObjects {:.1} ms (medians)",
        report::median(&table),
        report::median(&json),
        report::median(&floor)
    );
    let limit = format!("list, {VMS} VMs (median)");
    let median = report::median(&table);
    Report {
        figures: vec![
            Figure::new(
                SECTION,
                &format!("GetManagedObjects, {VMS} VMs, by the bench's client (floor)"),
                "ms",
                floor,
            ),
            Figure::new(
                SECTION,
                &format!("GetManagedObjects, {VMS} VMs, round trip alone (not decoded)"),
                "ms",
                raw,
            ),
            Figure::new(
                SECTION,
                &format!("daemon CPU per GetManagedObjects, {VMS} VMs"),
                "ms",
                daemon_cpu,
            ),
            Figure::new(
                SECTION,
                &format!("gns3-qemuctl list, {VMS} VMs"),
                "ms",
                table,
            ),
            Figure::new(
                SECTION,
                &format!("gns3-qemuctl list, {VMS} VMs: its CPU time"),
                "ms",
                table_cpu,
            ),
            Figure::new(
                SECTION,
                &format!("gns3-qemuctl list --json, {VMS} VMs"),
                "ms",
                json,
            ),
        ],
        targets: vec![Target::new(SECTION, &limit, median, LIST_LIMIT_MS, "ms")],
    }
}

/// `gns3-qemuctl list`; checks that it lists every VM.
fn list_table(address: &str) -> Ran {
    let ran = ctl(address, &["list"]);
    let rows = ran.stdout.lines().filter(|l| l.starts_with("vm-")).count();
    assert_eq!(rows, VMS, "list printed {rows} VMs:\n{}", ran.stdout);
    ran
}

/// `gns3-qemuctl list --json`; checks that it lists every VM.
fn list_json(address: &str) -> f64 {
    let ran = ctl(address, &["list", "--json"]);
    let vms: serde_json::Value = serde_json::from_str(&ran.stdout)
        .unwrap_or_else(|e| panic!("list --json printed no JSON ({e}):\n{}", ran.stdout));
    let n = vms.as_array().map(Vec::len);
    assert_eq!(n, Some(VMS), "list --json listed {n:?} VMs");
    ms(ran.wall)
}

/// The daemon's ObjectManager, as the client reaches it (gns3_qemuctl::snapshot).
pub async fn object_manager(conn: &zbus::Connection) -> ObjectManagerProxy<'static> {
    ObjectManagerProxy::builder(conn)
        .destination("org.gns3.Qemu")
        .path("/org/gns3/Qemu")
        .build()
        .await
        .expect("the ObjectManager proxy")
}

/// One GetManagedObjects, its reply decoded; checks that it has `vms` VMs.
pub async fn managed_objects(om: &ObjectManagerProxy<'_>, vms: usize) -> Duration {
    let t = Instant::now();
    let objects = om.get_managed_objects().await.expect("GetManagedObjects");
    let elapsed = t.elapsed();
    let n = objects
        .values()
        .filter(|ifaces| ifaces.keys().any(|i| i.as_str() == "org.gns3.Qemu.VM"))
        .count();
    assert_eq!(n, vms, "GetManagedObjects has {n} VMs");
    elapsed
}

/// What a run of gns3-qemuctl took and printed.
pub struct Ran {
    /// From spawn to exit.
    pub wall: Duration,
    /// The CPU time it used (user + system).
    pub cpu: Duration,
    pub stdout: String,
}

/// `gns3-qemuctl args` on the bus at `address`, as a user runs it, with stdout and stderr
/// read through pipes to their end. Panics unless it succeeds and prints nothing on stderr.
pub fn ctl(address: &str, args: &[&str]) -> Ran {
    let mut command = Command::new(common::ctl_bin());
    command
        .args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", address)
        .stdin(Stdio::null());
    // The bench waits for no other child while one runs: the difference is this one's.
    let before = children_cpu();
    let t = Instant::now();
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("running gns3-qemuctl {}: {e}", args.join(" ")));
    let wall = t.elapsed();
    let cpu = children_cpu() - before;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "gns3-qemuctl {} exited with {}:\n{stderr}",
        args.join(" "),
        out.status
    );
    let stdout = String::from_utf8(out.stdout).expect("gns3-qemuctl prints UTF-8");
    Ran { wall, cpu, stdout }
}

/// CPU time (user + system) of every child the bench has waited for so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_CHILDREN is a valid `who`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
