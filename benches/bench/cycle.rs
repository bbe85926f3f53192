//! A VM's whole life over D-Bus: CreateVM → Start → Stop → Delete, each step timed alone, for
//! two machines: a 64 MiB guest with no disk of its own (so the daemon makes its blank flash
//! disk at the first Start), and a lab machine as vendor appliances want it: four disks on
//! four interfaces (each a linked clone of its base, made at Start), a CD-ROM with media and
//! UEFI (the VARS copy made at Start). The floor is QEMU itself: the daemon's own command line
//! for such a VM, run by hand with a listening QMP socket as fd 3, until QMP greets, then
//! `cont` (the guest runs, as after Start), `quit` and its exit.
//!
//! Runs alternate with the floor's, so a shared machine's drifting load weighs on both.

use crate::hand;
use crate::lab::{ms, run_time, small_vm, BenchLab};
use crate::report::{self, Figure, Report, Target};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use zbus::zvariant::Variant;

const SECTION: &str = "cycle";
const RUNS: usize = 30;
const STEPS: [&str; 4] = ["CreateVM", "Start", "Stop", "Delete"];
/// A cycle may take this many times its floor.
const LIMIT: f64 = 1.1;

pub type Settings = HashMap<&'static str, Variant<'static>>;

pub fn run(rt: &Runtime) -> Report {
    let lab = rt.block_on(BenchLab::start());
    let images = tempfile::tempdir().expect("temp dir for the lab machine's images");
    let mut all = measure(rt, &lab, ("", ""), small_vm());
    let machine = (("lab machine: ", "machine-"), lab_machine(images.path()));
    let machine = measure(rt, &lab, machine.0, machine.1);
    all.figures.extend(machine.figures);
    all.targets.extend(machine.targets);
    all
}

/// The cycles of a VM with `settings` against their floors; figure names begin with `kind`,
/// VM names with `prefix`.
fn measure(
    rt: &Runtime,
    lab: &BenchLab,
    (kind, prefix): (&str, &str),
    settings: Settings,
) -> Report {
    let work = crate::lab::tmpfs_dir();
    let floor_cmd = rt.block_on(floor_command(lab, work.path(), prefix, &settings));
    // Not counted: the first start probes the QEMU binary and warms the page cache.
    rt.block_on(cycle(lab, &format!("{prefix}warm-up"), &settings));
    hand::up_and_quit(&floor_cmd, work.path());

    let (mut steps, mut cpu): ([Vec<f64>; 4], [Vec<f64>; 4]) = Default::default();
    let (mut cycles, mut floors, mut ups, mut downs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..RUNS {
        let mut run_cycle = || {
            let name = format!("{prefix}cycle-{r}");
            let (t, used) = rt.block_on(cycle_charged(lab, &name, &settings));
            for (s, d) in steps.iter_mut().zip(t) {
                s.push(ms(d));
            }
            for (s, d) in cpu.iter_mut().zip(used) {
                s.push(ms(d));
            }
            cycles.push(ms(t.iter().sum()));
        };
        let mut run_floor = || {
            let (up, down) = hand::up_and_quit(&floor_cmd, work.path());
            floors.push(ms(up + down));
            ups.push(ms(up));
            downs.push(ms(down));
        };
        if r % 2 == 0 {
            run_cycle();
            run_floor();
        } else {
            run_floor();
            run_cycle();
        }
    }
    eprintln!(
        "{kind}cycle median {:.1} ms, floor median {:.1} ms",
        report::median(&cycles),
        report::median(&floors)
    );
    let ratio = report::median(&cycles) / report::median(&floors);
    let named = |name: &str| format!("{kind}{name}");
    let mut figures = vec![
        Figure::new(
            SECTION,
            &named("QEMU by hand: spawn to QMP greeting, cont, quit, exit (floor)"),
            "ms",
            floors,
        ),
        Figure::new(
            SECTION,
            &named("CreateVM + Start + Stop + Delete"),
            "ms",
            cycles,
        ),
    ];
    figures.push(Figure::new(
        SECTION,
        &named("floor: spawn to the guest running (greeting, negotiation, cont)"),
        "ms",
        ups,
    ));
    figures.push(Figure::new(
        SECTION,
        &named("floor: quit to exit"),
        "ms",
        downs,
    ));
    for (name, samples) in STEPS.iter().zip(steps) {
        figures.push(Figure::new(SECTION, &named(name), "ms", samples));
    }
    for (name, samples) in STEPS.iter().zip(cpu) {
        figures.push(Figure::new(
            SECTION,
            &named(&format!("{name}: the daemon's CPU")),
            "ms",
            samples,
        ));
    }
    Report {
        figures,
        targets: vec![Target::new(
            SECTION,
            &named("cycle / floor (medians)"),
            ratio,
            LIMIT,
            "ratio",
        )],
    }
}

/// The lab machine: its four bases (empty qcow2 images) and its CD's media made in `dir`.
fn lab_machine(dir: &Path) -> Settings {
    let mut s = small_vm();
    // OVMF wants more than the small VM's 64 MiB.
    s.insert("Ram", Variant::from(256u32));
    s.insert("Firmware", Variant::from("uefi".to_string()));
    let disks = [
        ("Hda", "ide"),
        ("Hdb", "sata"),
        ("Hdc", "virtio"),
        ("Hdd", "scsi"),
    ];
    for (disk, interface) in disks {
        let base = dir.join(format!("{disk}.qcow2"));
        let made = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&base)
            .arg("64M")
            .status()
            .expect("running qemu-img");
        assert!(made.success(), "qemu-img create {}: {made}", base.display());
        let base = base.to_string_lossy().into_owned();
        s.insert(leak(format!("{disk}DiskImage")), Variant::from(base));
        s.insert(
            leak(format!("{disk}DiskInterface")),
            Variant::from(interface.to_string()),
        );
    }
    let iso = dir.join("media.iso");
    std::fs::write(&iso, vec![0u8; 1 << 20]).expect("writing the CD's media");
    s.insert(
        "CdromImage",
        Variant::from(iso.to_string_lossy().into_owned()),
    );
    s
}

/// A setting's name, made once per run of the bench.
fn leak(name: String) -> &'static str {
    Box::leak(name.into_boxed_str())
}

/// One life of a VM; the time of each step.
pub async fn cycle(lab: &BenchLab, name: &str, settings: &Settings) -> [Duration; 4] {
    cycle_charged(lab, name, settings).await.0
}

/// One life of a VM; the time of each step, and the CPU time the daemon's threads spent in
/// each (to the nanosecond: `lab::run_time`).
async fn cycle_charged(
    lab: &BenchLab,
    name: &str,
    settings: &Settings,
) -> ([Duration; 4], [Duration; 4]) {
    let pid = lab.daemon.pid();
    let (path, create) = step(pid, lab.manager.create_vm(name, settings.clone())).await;
    let path = path.unwrap_or_else(|e| panic!("CreateVM {name}: {e}"));
    let vm = lab.vm(&path).await;
    let (started, start) = step(pid, vm.start()).await;
    started.unwrap_or_else(|e| panic!("Start {name}: {e}"));
    let (stopped, stop) = step(pid, vm.stop()).await;
    stopped.unwrap_or_else(|e| panic!("Stop {name}: {e}"));
    let (deleted, delete) = step(pid, vm.delete()).await;
    deleted.unwrap_or_else(|e| panic!("Delete {name}: {e}"));
    let steps = [create, start, stop, delete];
    (steps.map(|s| s.0), steps.map(|s| s.1))
}

/// What `call` returns, with its time and the CPU time the threads of process `pid` spent
/// meanwhile.
async fn step<T>(
    pid: u32,
    call: impl std::future::Future<Output = T>,
) -> (T, (Duration, Duration)) {
    let cpu = run_time(pid);
    let t = Instant::now();
    let out = call.await;
    (out, (t.elapsed(), run_time(pid).saturating_sub(cpu)))
}

/// The command line the daemon runs for a VM like the cycle's. The VM is kept: its console
/// and monitor ports stay reserved for it, free for the floor's QEMU to bind.
async fn floor_command(
    lab: &BenchLab,
    work: &Path,
    prefix: &str,
    settings: &Settings,
) -> Vec<String> {
    let path = lab
        .manager
        .create_vm(&format!("{prefix}floor"), settings.clone())
        .await
        .expect("CreateVM floor");
    hand::command_of(&lab.vm(&path).await, work).await
}
