//! A node's whole life as a GNS3 user gives it: create, start, stop and delete through the
//! real GNS3 controller (gns3-server 3.0.6, tests/common/gns3), with the release
//! gns3-qemud-compute in front of the bench's daemon, each call timed alone from the
//! controller's REST API. "Started" is when the controller's start returns: the compute
//! answers once it announced the node `started` on its notification socket, not when the
//! guest has booted. The node is the `cycle` section's small VM (64 MiB, no disk, no kernel).
//!
//! The floor is the same four calls straight to the daemon over D-Bus (CreateVM, Start,
//! Stop, Delete), with the settings the compute gave the daemon for a node: read back from
//! the daemon, every property of the node's VM that differs from a VM created bare, less the
//! VM's own (id, project, name, ports, MAC). Between the two, to tell the controller's part
//! from the compute's: the same four calls made to the compute's REST API directly, in a
//! project of its own that the controller does not know, with the body the controller sends
//! (name, ram, console_type, qemu_path). Each run makes the three cycles in a rotated order.
//! The CPU time the daemon, the compute and the controller used is charged to each kind of
//! cycle (schedstat's nanoseconds: stat's 10 ms ticks are longer than a call).
//!
//! Then the compute's memory (VmRSS of its process): just registered, idle (after a first
//! node came and went), and with 20 nodes of the controller defined, over rounds, each from
//! idle; per node is (with 20 - idle) / 20.

use crate::common::compute::{self, Compute};
use crate::common::gns3::Controller;
use crate::cycle::{cycle, Settings};
use crate::lab::{ms, run_time, small_vm, BenchLab, Memory};
use crate::report::{self, Figure, Report, Target};
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use zbus::{OwnedObjectPath, OwnedVariant, Variant};

const SECTION: &str = "gns3";
const RUNS: usize = 30;
const STEPS: [&str; 4] = ["create", "start", "stop", "delete"];
/// Nodes defined at once for the compute's memory per node, and the rounds of it.
const NODES: usize = 20;
const ROUNDS: usize = 3;
const RATIO_LIMIT: f64 = 1.2;
/// Measured 6.0 MiB idle (0.7 MiB of it heap) and 16 KiB per node on a 2-core Debian 12
/// machine: the daemon's own idle bound, and twice the per node.
const IDLE_LIMIT_KIB: f64 = 8.0 * 1024.0;
const PER_NODE_LIMIT_KIB: f64 = 32.0;
/// Properties of a VM that are its own, or not settings: left out of the floor's settings.
const NOT_SETTINGS: &[&str] = &[
    "Id",
    "Project",
    "Name",
    "ConsolePort",
    "MonitorPort",
    "VncPort",
    "MacAddress",
    "State",
    "Pid",
    "ExitStatus",
    "LastError",
    "SavedState",
    "Accelerated",
    "ConsoleViewers",
    "Captures",
    "Links",
    "Tunnels",
];

/// The controller, the compute it drives and the project the nodes are made in.
struct Gns3 {
    c: Controller,
    compute_id: String,
    project: String,
}

impl Gns3 {
    fn nodes(&self, path: &str) -> String {
        format!("/v3/projects/{}/nodes{path}", self.project)
    }

    /// Creates the node `name`; its id.
    fn create(&self, name: &str) -> String {
        let body = json!({"name": name, "node_type": "qemu", "compute_id": self.compute_id,
            "properties": {"ram": 64, "console_type": "telnet",
                "qemu_path": "qemu-system-x86_64"}});
        let (status, node) = self.c.post(&self.nodes(""), &body);
        assert_eq!(status, 201, "creating node {name}: {node}");
        node["node_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no node_id in {node}"))
            .to_string()
    }

    fn act(&self, node: &str, action: &str) {
        let (status, body) = self
            .c
            .post(&self.nodes(&format!("/{node}/{action}")), &json!({}));
        assert!(
            status == 200 || status == 204,
            "{action} node {node}: {status} {body}"
        );
    }

    fn delete(&self, node: &str) {
        let (status, body) = self.c.delete(&self.nodes(&format!("/{node}")));
        assert_eq!(status, 204, "deleting node {node}: {body}");
    }

    /// One life of a node; the time of each call.
    fn cycle(&self, name: &str) -> [Duration; 4] {
        let t = Instant::now();
        let node = self.create(name);
        let create = t.elapsed();
        let t = Instant::now();
        self.act(&node, "start");
        let start = t.elapsed();
        let t = Instant::now();
        self.act(&node, "stop");
        let stop = t.elapsed();
        let t = Instant::now();
        self.delete(&node);
        [create, start, stop, t.elapsed()]
    }
}

/// Each step's times over runs, each run's total, in ms, and the CPU time each process used
/// over all of them.
#[derive(Default)]
struct Phases {
    steps: [Vec<f64>; 4],
    totals: Vec<f64>,
    cpu: [Duration; 3],
}

impl Phases {
    fn push(&mut self, (t, cpu): ([Duration; 4], [Duration; 3])) {
        for (s, d) in self.steps.iter_mut().zip(t) {
            s.push(ms(d));
        }
        self.totals.push(ms(t.iter().sum()));
        for (total, c) in self.cpu.iter_mut().zip(cpu) {
            *total += c;
        }
    }

    /// The CPU time of the process `i` of [`PROCESSES`] per run, in ms.
    fn cpu_per_run(&self, i: usize) -> f64 {
        ms(self.cpu[i]) / self.totals.len() as f64
    }
}

/// The processes whose CPU time each cycle is charged with.
const PROCESSES: [&str; 3] = ["the daemon", "the compute", "the controller"];

/// What `f` returns, and the CPU time each of `pids` used meanwhile.
fn charged<T>(pids: [u32; 3], f: impl FnOnce() -> T) -> (T, [Duration; 3]) {
    let before = pids.map(run_time);
    let out = f();
    let after = pids.map(run_time);
    (out, [0, 1, 2].map(|i| after[i].saturating_sub(before[i])))
}

/// A project of the compute's own, which the controller does not know, for the calls made
/// to the compute's REST API directly (as the controller makes them, less the controller).
struct Direct {
    project: &'static str,
}

impl Direct {
    fn open(compute: &Compute) -> Direct {
        let project = "0b3e1c5a-6d2f-4e7a-9c1b-5f8d2a4e6b10";
        let (status, body) = compute.call(
            "POST",
            "/projects",
            Some(json!({"name": "direct", "project_id": project})),
        );
        assert_eq!(status, 201, "opening a project on the compute: {body}");
        Direct { project }
    }

    fn nodes(&self, path: &str) -> String {
        format!("/projects/{}/qemu/nodes{path}", self.project)
    }

    /// One life of a node, each call to the compute timed alone.
    fn cycle(&self, compute: &Compute, name: &str) -> [Duration; 4] {
        let body = json!({"name": name, "ram": 64, "console_type": "telnet",
            "qemu_path": "qemu-system-x86_64"});
        let t = Instant::now();
        let (status, node) = compute.call("POST", &self.nodes(""), Some(body));
        let create = t.elapsed();
        assert_eq!(status, 201, "creating node {name} on the compute: {node}");
        let node = node["node_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no node_id in {node}"))
            .to_string();
        let mut times = vec![create];
        for (method, path) in [("POST", "/start"), ("POST", "/stop"), ("DELETE", "")] {
            let t = Instant::now();
            let (status, body) = compute.call(method, &self.nodes(&format!("/{node}{path}")), None);
            times.push(t.elapsed());
            assert_eq!(
                status, 204,
                "{method} node {node}{path} on the compute: {body}"
            );
        }
        [times[0], times[1], times[2], times[3]]
    }

    fn delete(&self, compute: &Compute) {
        let (status, body) = compute.call("DELETE", &format!("/projects/{}", self.project), None);
        assert_eq!(status, 204, "deleting the compute's own project: {body}");
    }
}

pub fn run(rt: &Runtime) -> Report {
    let lab = rt.block_on(BenchLab::start());
    eprintln!("compute: {}", compute::compute_bin().display());
    let compute_dir = tempfile::tempdir().expect("temp dir for the compute");
    // As its unit runs it: the compute's default log level (info), not the tests' debug.
    let compute = Compute::start_with_env(
        &lab.daemon.address,
        compute_dir.path(),
        "127.0.0.1",
        &[],
        &[("RUST_LOG", "info")],
    );
    let pid = compute.child.id();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/exe: {e}"));
    assert_eq!(
        exe,
        compute::compute_bin(),
        "process {pid} is not the release compute"
    );
    let controller_dir = tempfile::tempdir().expect("temp dir for the GNS3 controller");
    let c = Controller::start(controller_dir.path(), compute::USER, compute::PASSWORD);
    let compute_id = c
        .add_compute("127.0.0.1", compute.port, compute::USER, compute::PASSWORD)
        .unwrap_or_else(|e| panic!("the controller refused the compute: {e:?}"));
    // The controller opens the compute's notification socket after its connect returns.
    std::thread::sleep(Duration::from_secs(1));
    let registered = Memory::of(pid);
    let (status, project) = c.post("/v3/projects", &json!({"name": "bench"}));
    assert_eq!(status, 201, "creating the project: {project}");
    let project = project["project_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no project_id in {project}"))
        .to_string();
    let g = Gns3 {
        c,
        compute_id,
        project,
    };

    let settings = rt.block_on(floor_settings(&lab, &g));
    eprintln!("the floor's settings: {settings:?}");
    // Not counted: the first of each pages in the code, and the controller's first node
    // opens the project on the compute.
    g.cycle("warm-up");
    let direct = Direct::open(&compute);
    direct.cycle(&compute, "c-warm-up");
    rt.block_on(cycle(&lab, "floor-warm-up", &settings));
    let idle = Memory::of(pid);

    let pids = [lab.daemon.pid(), pid, g.c.pid()];
    let (mut through, mut compute_alone, mut floor) =
        (Phases::default(), Phases::default(), Phases::default());
    // Each run's three cycles in a rotated order, so that none always comes first.
    for r in 0..RUNS {
        for k in 0..3 {
            match (r + k) % 3 {
                0 => through.push(charged(pids, || g.cycle(&format!("n{r}")))),
                1 => compute_alone.push(charged(pids, || direct.cycle(&compute, &format!("c{r}")))),
                _ => floor.push(charged(pids, || {
                    rt.block_on(cycle(&lab, &format!("floor-{r}"), &settings))
                })),
            }
        }
    }
    // Each run's cycle against the floor's of the same run: the three are made back to
    // back, so a load that drifts over the section (QEMU's start is most of a cycle, and it
    // slows with the machine) weighs on both sides of each ratio alike.
    let ratios = |p: &Phases| -> Vec<f64> {
        p.totals
            .iter()
            .zip(&floor.totals)
            .map(|(t, f)| t / f)
            .collect()
    };
    let added = |p: &Phases| -> Vec<f64> {
        p.totals
            .iter()
            .zip(&floor.totals)
            .map(|(t, f)| t - f)
            .collect()
    };
    let (ratio, ratio_alone) = (ratios(&through), ratios(&compute_alone));
    eprintln!(
        "cycle through the controller: median {:.1} ms, the compute alone {:.1} ms, \
         floor {:.1} ms; {:.2}x and {:.2}x the floor (medians of each run's ratio)",
        report::median(&through.totals),
        report::median(&compute_alone.totals),
        report::median(&floor.totals),
        report::median(&ratio),
        report::median(&ratio_alone)
    );

    let mut defined = Vec::new();
    for round in 0..ROUNDS {
        let nodes: Vec<String> = (0..NODES)
            .map(|i| g.create(&format!("m{round}-{i}")))
            .collect();
        defined.push(Memory::of(pid));
        for node in &nodes {
            g.delete(node);
        }
        eprintln!(
            "round {}: compute {:.0} KiB resident with {NODES} nodes, {:.0} KiB after",
            round + 1,
            defined[round].rss_kib,
            Memory::of(pid).rss_kib
        );
    }
    let after = Memory::of(pid);
    let (status, body) = g.c.delete(&format!("/v3/projects/{}", g.project));
    assert_eq!(status, 204, "deleting the project: {body}");
    direct.delete(&compute);
    g.c.remove_compute(&g.compute_id);
    let left = rt.block_on(lab.manager.list_vms()).expect("ListVMs");
    assert!(left.is_empty(), "VMs left in the daemon: {left:?}");

    let per_node: Vec<f64> = defined
        .iter()
        .map(|m| (m.rss_kib - idle.rss_kib) / NODES as f64)
        .collect();
    let mut figures = vec![
        Figure::new(
            SECTION,
            "CreateVM + Start + Stop + Delete over D-Bus (floor)",
            "ms",
            floor.totals.clone(),
        ),
        Figure::new(
            SECTION,
            "create + start + stop + delete through the controller",
            "ms",
            through.totals.clone(),
        ),
        Figure::new(
            SECTION,
            "the same four calls to the compute alone",
            "ms",
            compute_alone.totals.clone(),
        ),
    ];
    for (whose, phases) in [
        ("through the controller", &through),
        ("the compute alone", &compute_alone),
    ] {
        figures.push(Figure::new(
            SECTION,
            &format!("cycle {whose} / the run's floor"),
            "ratio",
            ratios(phases),
        ));
        figures.push(Figure::new(
            SECTION,
            &format!("cycle {whose} - the run's floor"),
            "ms",
            added(phases),
        ));
    }
    for (i, name) in STEPS.iter().enumerate() {
        for (whose, phases) in [
            ("through the controller", &through),
            ("to the compute alone", &compute_alone),
            ("its D-Bus call (floor)", &floor),
        ] {
            figures.push(Figure::new(
                SECTION,
                &format!("node {name}: {whose}"),
                "ms",
                phases.steps[i].clone(),
            ));
        }
    }
    for (i, process) in PROCESSES.iter().enumerate() {
        for (whose, phases) in [
            ("through the controller", &through),
            ("to the compute alone", &compute_alone),
            ("over D-Bus (floor)", &floor),
        ] {
            figures.push(Figure::new(
                SECTION,
                &format!("CPU of {process} per cycle {whose}"),
                "ms",
                vec![phases.cpu_per_run(i)],
            ));
        }
    }
    let memory = [
        ("just registered", vec![registered]),
        ("idle", vec![idle]),
        (&*format!("{NODES} nodes defined"), defined.clone()),
        ("all deleted", vec![after]),
    ];
    for (what, at) in memory {
        let rss = at.iter().map(|m| m.rss_kib).collect();
        let anon = at.iter().map(|m| m.anon_kib).collect();
        figures.push(Figure::new(
            SECTION,
            &format!("compute resident, {what}"),
            "KiB",
            rss,
        ));
        figures.push(Figure::new(
            SECTION,
            &format!("compute anon, {what}"),
            "KiB",
            anon,
        ));
    }
    figures.push(Figure::new(
        SECTION,
        &format!("compute resident per node, of {NODES}"),
        "KiB",
        per_node.clone(),
    ));
    Report {
        figures,
        targets: vec![
            Target::new(
                SECTION,
                "through the controller / floor (median of runs)",
                report::median(&ratio),
                RATIO_LIMIT,
                "ratio",
            ),
            Target::new(
                SECTION,
                "the compute alone / floor (median of runs)",
                report::median(&ratio_alone),
                RATIO_LIMIT,
                "ratio",
            ),
            Target::new(
                SECTION,
                "compute resident, idle",
                idle.rss_kib,
                IDLE_LIMIT_KIB,
                "KiB",
            ),
            Target::new(
                SECTION,
                &format!("compute resident per node, of {NODES} (median)"),
                report::median(&per_node),
                PER_NODE_LIMIT_KIB,
                "KiB",
            ),
        ],
    }
}

/// The settings the compute gives the daemon for the bench's node: a node made through the
/// controller, its VM's properties against those of a VM created bare, and the node deleted.
async fn floor_settings(lab: &BenchLab, g: &Gns3) -> Settings {
    let node = g.create("probe");
    let path = lab
        .manager
        .get_vm(&node.replace('-', ""))
        .await
        .unwrap_or_else(|e| panic!("the daemon has no VM for node {node}: {e}"));
    let of_node = properties(lab, &path).await;
    let bare = lab
        .manager
        .create_vm("bare", HashMap::new())
        .await
        .expect("CreateVM bare");
    let of_bare = properties(lab, &bare).await;
    lab.vm(&bare).await.delete().await.expect("Delete bare");
    g.delete(&node);
    let mut settings = small_vm();
    for (name, value) in of_node {
        if NOT_SETTINGS.contains(&name.as_str()) || of_bare.get(&name) == Some(&value) {
            continue;
        }
        let value: Variant<'static> = value
            .try_clone()
            .map(Into::into)
            .unwrap_or_else(|e| panic!("the node's {name}: {e}"));
        settings.insert(Box::leak(name.into_boxed_str()), value);
    }
    settings
}

/// Every property of the VM at `path` (one GetAll).
async fn properties(lab: &BenchLab, path: &OwnedObjectPath) -> HashMap<String, OwnedVariant> {
    let proxy = zbus::fdo::PropertiesProxy::builder(&lab.conn)
        .destination("org.gns3.Qemu")
        .path(path.clone())
        .build()
        .await
        .expect("a Properties proxy");
    let interface = zbus::names::InterfaceName::from_static_str_unchecked("org.gns3.Qemu.VM");
    proxy
        .get_all(interface)
        .await
        .unwrap_or_else(|e| panic!("GetAll of {path}: {e}"))
}
