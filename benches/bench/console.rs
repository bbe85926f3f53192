//! Consoles: how fast a guest's output reaches a viewer through the daemon's console, and
//! how long a keystroke takes to come back, each beside the floor of the same run: the same
//! guest started by hand on QEMU's own telnet server (`-serial telnet:…`), where the viewer
//! talks to QEMU directly. Then what a running VM with a console costs the daemon in memory.
//!
//! The two guests run side by side and their runs alternate, so that a shared machine's
//! load weighs on both alike.

use crate::common::{self, Console};
use crate::hand::Qemu;
use crate::lab::{self, BenchLab};
use crate::report::{self, Figure, Report, Target};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

const SECTION: &str = "console";
/// `seq 1 LINES`: 588 895 bytes from the guest (a \r more per line on the wire).
const LINES: u32 = 100_000;
const RUNS: usize = 5;
const KEYS: usize = 200;
/// Running VMs whose memory is measured, each with a viewer.
const VMS: usize = 4;
const BOOT: Duration = Duration::from_secs(180);
const PRINT: Duration = Duration::from_secs(300);
const SCROLLBACK_KIB: f64 = 256.0;

pub fn run(rt: &Runtime) -> Report {
    let guest = common::guest();
    let dir = tempfile::tempdir().expect("temp dir for the hand-started QEMU's log");
    eprintln!("booting the hand-started guest and the daemon's");
    let mut hand = Qemu::start(guest, &dir.path().join("qemu.log"), &[]);
    let lab = rt.block_on(BenchLab::start());
    let vm = rt.block_on(async {
        let vm = common::create(&lab.manager, "console", bench_vm()).await;
        vm.start().await.expect("starting the VM");
        vm
    });
    let port = rt.block_on(vm.console_port()).expect("ConsolePort");
    let mut consoles = [hand.console(), Console::connect(port)];
    let labels = ["QEMU's telnet server (floor)", "the daemon's console"];
    for (console, label) in consoles.iter_mut().zip(labels) {
        console
            .wait_for("GUEST-READY", BOOT)
            .unwrap_or_else(|e| panic!("{label}: the guest did not boot: {e}"));
        // TCG translates the printing and echo paths once: not counted.
        print(console, label);
        keystrokes(console, label, 10);
    }

    let mut rates = [Vec::new(), Vec::new()];
    let mut echoes = [Vec::new(), Vec::new()];
    for r in 0..RUNS {
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let mbytes = print(&mut consoles[i], labels[i]);
            eprintln!("{}: run {} {mbytes:.2} MB/s", labels[i], r + 1);
            rates[i].push(mbytes);
            echoes[i].extend(keystrokes(&mut consoles[i], labels[i], KEYS / RUNS));
        }
    }
    let throughput = report::median(&rates[1]) / report::median(&rates[0]);
    let extra_echo = report::median(&echoes[1]) - report::median(&echoes[0]);
    drop(consoles);
    drop(hand);

    let (per_vm, file_kib) = rt.block_on(memory_per_vm(&lab));
    let [floor_rate, rate] = rates;
    let [floor_echo, echo] = echoes;
    Report {
        figures: vec![
            Figure::new(
                SECTION,
                &format!("guest output, {}", labels[0]),
                "MB/s",
                floor_rate,
            ),
            Figure::new(
                SECTION,
                &format!("guest output, {}", labels[1]),
                "MB/s",
                rate,
            ),
            Figure::new(
                SECTION,
                "output: daemon / floor (medians)",
                "ratio",
                vec![throughput],
            ),
            Figure::new(
                SECTION,
                &format!("keystroke echo, {}", labels[0]),
                "ms",
                floor_echo,
            ),
            Figure::new(
                SECTION,
                &format!("keystroke echo, {}", labels[1]),
                "ms",
                echo,
            ),
            Figure::new(
                SECTION,
                "echo: daemon − floor (medians)",
                "ms",
                vec![extra_echo],
            ),
            Figure::new(
                SECTION,
                "daemon's memory per running VM with a viewer",
                "KiB",
                vec![per_vm],
            ),
            Figure::new(
                SECTION,
                "scrollback file per VM (tmpfs, not the daemon's)",
                "KiB",
                vec![file_kib],
            ),
        ],
        targets: vec![
            // Met when value <= limit: the floor's rate over the daemon's, at most 1 / 0.9.
            Target::new(
                SECTION,
                "output: floor / daemon, at most 1/0.9",
                1.0 / throughput,
                1.0 / 0.9,
                "ratio",
            ),
            Target::new(
                SECTION,
                "echo: daemon − floor, median",
                extra_echo,
                1.0,
                "ms",
            ),
            Target::new(
                SECTION,
                "memory per running VM with a console, at most scrollback + 16 KiB",
                per_vm,
                SCROLLBACK_KIB + 16.0,
                "KiB",
            ),
        ],
    }
}

/// The test guest, at the priority of the hand-started QEMU (the daemon's default is low).
fn bench_vm() -> std::collections::HashMap<&'static str, zbus::Variant<'static>> {
    common::guest_settings(&[("ProcessPriority", zbus::Variant::from("normal"))])
}

/// The guest prints `seq 1 LINES` on its console; MB/s of the guest's bytes, timed on the
/// host between the shell's markers.
fn print(console: &mut Console, label: &str) -> f64 {
    let bytes: u64 = (1..=LINES).map(|n| n.to_string().len() as u64 + 1).sum();
    let (took, out) = lab::timed(console, &format!("seq 1 {LINES}"), PRINT, PRINT)
        .unwrap_or_else(|e| panic!("{label}: printing: {e}"));
    assert!(
        out.contains(&format!("\n{LINES}\r")),
        "{label}: the output ends early"
    );
    bytes as f64 / took.as_secs_f64() / 1e6
}

/// `keys` keystrokes typed into `cat`, each timed until the guest's tty echoes it; ms.
fn keystrokes(console: &mut Console, label: &str, keys: usize) -> Vec<f64> {
    let n = lab::next_marker();
    console.send_line(&format!("echo K_$((1+{n}))_; cat"));
    console
        .wait_for(&format!("K_{}_", n + 1), PRINT)
        .unwrap_or_else(|e| panic!("{label}: starting cat: {e}"));
    // cat runs once the shell's next output (none) would come: give it a moment.
    std::thread::sleep(Duration::from_millis(200));
    let mut out = Vec::with_capacity(keys);
    for _ in 0..keys {
        let t = Instant::now();
        console.send(b"Z");
        console
            .wait_for("Z", PRINT)
            .unwrap_or_else(|e| panic!("{label}: no echo: {e}"));
        out.push(lab::ms(t.elapsed()));
    }
    // Ctrl-C ends cat. Keys typed before the shell's prompt would be taken by its line
    // editor as the answer to the cursor query it sends: wait for the prompt first.
    console.send(b"\x03");
    console
        .wait_for("# ", PRINT)
        .unwrap_or_else(|e| panic!("{label}: no prompt after cat: {e}"));
    std::thread::sleep(Duration::from_millis(200));
    console
        .run("true", PRINT)
        .unwrap_or_else(|e| panic!("{label}: the shell after cat: {e}"));
    out
}

/// The daemon's own memory (RssAnon) per running VM with a console and one viewer, once a
/// first start has paid for what the daemon allocates once; and the size of a scrollback
/// file, which lives on the runtime dir's tmpfs.
async fn memory_per_vm(lab: &BenchLab) -> (f64, f64) {
    let warm = common::create(&lab.manager, "warm-up", bench_vm()).await;
    warm.start().await.expect("starting the warm-up VM");
    let mut warm_console = Console::connect(warm.console_port().await.expect("ConsolePort"));
    warm_console
        .wait_for("GUEST-READY", BOOT)
        .expect("the warm-up guest boots");
    drop(warm_console);
    warm.stop().await.expect("stopping the warm-up VM");
    let mut vms = Vec::new();
    for i in 0..VMS {
        vms.push(common::create(&lab.manager, &format!("mem-{i}"), bench_vm()).await);
    }
    let before = lab.memory();
    let mut viewers = Vec::new();
    for vm in &vms {
        vm.start().await.expect("starting a VM");
        viewers.push(Console::connect(
            vm.console_port().await.expect("ConsolePort"),
        ));
    }
    for v in &mut viewers {
        v.wait_for("GUEST-READY", BOOT).expect("a guest boots");
    }
    let after = lab.memory();
    let run = lab.daemon.dir.join("run");
    let files: Vec<u64> = std::fs::read_dir(&run)
        .expect("the daemon's runtime dir")
        .flatten()
        .filter_map(|e| std::fs::metadata(e.path().join("console")).ok())
        .map(|m| m.len())
        .collect();
    let file_kib = files.iter().sum::<u64>() as f64 / files.len().max(1) as f64 / 1024.0;
    for vm in &vms {
        vm.stop().await.expect("stopping a VM");
    }
    ((after.anon_kib - before.anon_kib) / VMS as f64, file_kib)
}
