//! A lab coming up: 20 VMs (64 MiB, no disk) started at once, wall time until every Start
//! has answered (each answers once its VM runs), and stopped at once; beside it one VM
//! started alone, and the floor: the same 20 QEMU command lines run by hand at once, each
//! continued (`cont`) as soon as its QMP greets, until all 20 run — the same work as the
//! daemon's. The daemon's own CPU time during the 20 starts shows its share; the rest is
//! QEMU starting, 20 times over, on the machine's cores.

use crate::hand::{self, ByHand};
use crate::lab::{ms, run_time, small_vm, stat_ticks, wait_time, BenchLab};
use crate::report::{self, Figure, Report, Target};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

const SECTION: &str = "parallel";
const VMS: usize = 20;
const RUNS: usize = 5;
const ALONE_RUNS: usize = 10;
/// 20 VMs started by the daemon may take this many times the same 20 started by hand.
const LIMIT: f64 = 1.2;

pub fn run(rt: &Runtime) -> Report {
    rt.block_on(async {
        let lab = BenchLab::start().await;
        let paths = lab.create_many("lab", VMS, &small_vm()).await;
        let mut vms = Vec::new();
        for p in &paths {
            vms.push(lab.vm(p).await);
        }
        // Each VM's first start (not counted) makes its flash disk.
        let work: Vec<tempfile::TempDir> = (0..VMS)
            .map(|_| crate::lab::tmpfs_dir())
            .collect();
        let mut by_hand = Vec::new();
        for (vm, dir) in vms.iter().zip(&work) {
            by_hand.push(hand::command_of(vm, dir.path()).await);
        }

        let (mut alone, mut alone_stop) = (Vec::new(), Vec::new());
        for _ in 0..ALONE_RUNS {
            alone.push(ms(all(&vms[..1], Op::Start).await));
            alone_stop.push(ms(all(&vms[..1], Op::Stop).await));
        }
        let (mut starts, mut stops, mut cpu, mut floor) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut spread, mut floor_spread, mut waited) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..RUNS {
            let (up, between) = all_by_hand(&by_hand, &work);
            floor.push(ms(up));
            floor_spread.push(between);
            let before = (run_time(lab.daemon.pid()), wait_time(lab.daemon.pid()));
            starts.push(ms(all(&vms, Op::Start).await));
            cpu.push(ms(run_time(lab.daemon.pid()) - before.0) / VMS as f64);
            waited.push(ms(wait_time(lab.daemon.pid()) - before.1));
            let mut pids = Vec::new();
            for vm in &vms {
                pids.push(vm.pid().await.expect("Pid"));
            }
            spread.push(started_between(&pids));
            stops.push(ms(all(&vms, Op::Stop).await));
            eprintln!(
                "run {}: {VMS} up in {:.0} ms, down in {:.0} ms; by hand {:.0} ms",
                r + 1,
                starts[r],
                stops[r],
                floor[r]
            );
        }
        let ratio = report::median(&starts) / report::median(&floor);
        Report {
            figures: vec![
                Figure::new(
                    SECTION,
                    &format!("{VMS} QEMUs by hand at once, each continued at its greeting: until all run (floor)"),
                    "ms",
                    floor,
                ),
                Figure::new(SECTION, "Start, one VM alone", "ms", alone),
                Figure::new(
                    SECTION,
                    &format!("Start, {VMS} at once (wall)"),
                    "ms",
                    starts,
                ),
                Figure::new(SECTION, "daemon CPU per VM of those", "ms", cpu),
                Figure::new(
                    SECTION,
                    "the daemon's threads waiting for a CPU meanwhile (sum)",
                    "ms",
                    waited,
                ),
                Figure::new(
                    SECTION,
                    "the daemon's 20 QEMUs: first to last spawned",
                    "ms",
                    spread,
                ),
                Figure::new(
                    SECTION,
                    "the 20 by hand: first to last spawned",
                    "ms",
                    floor_spread,
                ),
                Figure::new(SECTION, "Stop, one VM alone", "ms", alone_stop),
                Figure::new(SECTION, &format!("Stop, {VMS} at once (wall)"), "ms", stops),
            ],
            targets: vec![Target::new(
                SECTION,
                &format!("{VMS} up / {VMS} by hand (medians)"),
                ratio,
                LIMIT,
                "ratio",
            )],
        }
    })
}

/// The time between the first and the last start of the processes `pids` (ms, to the
/// kernel's clock tick: field 22 of /proc/<pid>/stat).
fn started_between(pids: &[u32]) -> f64 {
    let starts: Vec<Duration> = pids.iter().map(|&pid| stat_ticks(pid, &[22])).collect();
    let (first, last) = (starts.iter().min(), starts.iter().max());
    first.zip(last).map_or(0.0, |(f, l)| ms(*l - *f))
}

/// Runs every command line of `cmds` by hand at once, each continued as soon as its QMP has
/// greeted; the wall time until the last runs, and the time between their first and last
/// spawn (`started_between`). Then each is quit (not counted).
fn all_by_hand(cmds: &[Vec<String>], work: &[tempfile::TempDir]) -> (Duration, f64) {
    let t = Instant::now();
    let running: Vec<ByHand> = std::thread::scope(|s| {
        let up: Vec<_> = cmds
            .iter()
            .zip(work)
            .map(|(cmd, dir)| {
                s.spawn(move || {
                    let mut qemu = ByHand::spawn(cmd, dir.path());
                    qemu.execute("cont");
                    qemu
                })
            })
            .collect();
        up.into_iter()
            .map(|h| h.join().expect("a floor's thread panicked"))
            .collect()
    });
    let elapsed = t.elapsed();
    let pids: Vec<u32> = running.iter().map(ByHand::pid).collect();
    let between = started_between(&pids);
    for qemu in running {
        qemu.quit();
    }
    (elapsed, between)
}

#[derive(Clone, Copy)]
pub enum Op {
    Start,
    Stop,
}

/// Starts or stops every VM of `vms` at once; the wall time until the last has answered.
pub async fn all(vms: &[crate::common::VmProxy<'static>], op: Op) -> Duration {
    let t = Instant::now();
    let mut calls = JoinSet::new();
    for vm in vms {
        let vm = vm.clone();
        calls.spawn(async move {
            match op {
                Op::Start => vm.start().await,
                Op::Stop => vm.stop().await,
            }
        });
    }
    while let Some(done) = calls.join_next().await {
        done.expect("a call task panicked")
            .unwrap_or_else(|e| panic!("a Start or Stop failed: {e}"));
    }
    t.elapsed()
}
