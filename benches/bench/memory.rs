//! The daemon's memory: resident set just started, idle (after a first VM came and went),
//! with 100 and 1 000 VMs defined, with 20 of them running, and after everything is stopped
//! and deleted; over rounds, each from idle. The
//! resident set counts the mapped binary and libraries (shared, paged in once); the heap
//! and stacks, "anon", are what each VM adds to.

use crate::lab::{small_vm, BenchLab, Memory};
use crate::parallel::{all, Op};
use crate::report::{self, Figure, Report, Target};
use tokio::runtime::Runtime;

const SECTION: &str = "memory";
const ROUNDS: usize = 3;
const RUNNING: usize = 20;
const IDLE_LIMIT_KIB: f64 = 8.0 * 1024.0;
const PER_VM_LIMIT_KIB: f64 = 20.0;
/// After deleting everything, within this fraction of idle.
const BACK_LIMIT: f64 = 0.10;

pub fn run(rt: &Runtime) -> Report {
    rt.block_on(async {
        let lab = BenchLab::start().await;
        // Just started: ready, one call served. Idle: after one VM's whole life, when the
        // code every call runs has been paged in once, as in a daemon that has served.
        lab.manager.list_vms().await.expect("ListVMs");
        let cold = lab.memory();
        let warm_up = lab.create_many("warm-up", 1, &small_vm()).await;
        let warm_up = [lab.vm(&warm_up[0]).await];
        all(&warm_up, Op::Start).await;
        all(&warm_up, Op::Stop).await;
        warm_up[0].delete().await.expect("Delete");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let idle = lab.memory();
        eprintln!(
            "idle: {:.0} KiB resident, {:.0} KiB anon",
            idle.rss_kib, idle.anon_kib
        );
        let mut at: [Vec<Memory>; 4] = Default::default();
        for round in 0..ROUNDS {
            let mut paths = lab
                .create_many(&format!("m{round}"), 100, &small_vm())
                .await;
            at[0].push(lab.memory());
            paths.extend(
                lab.create_many(&format!("n{round}"), 900, &small_vm())
                    .await,
            );
            at[1].push(lab.memory());
            let mut running = Vec::new();
            for p in &paths[..RUNNING] {
                running.push(lab.vm(p).await);
            }
            all(&running, Op::Start).await;
            at[2].push(lab.memory());
            all(&running, Op::Stop).await;
            for p in &paths {
                lab.vm(p).await.delete().await.expect("Delete");
            }
            // The daemon trims its heap once deletions pause (src/heap.rs).
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            at[3].push(lab.memory());
            eprintln!(
                "round {}: {:.0} KiB with 1 000 VMs, {:.0} KiB after deleting them",
                round + 1,
                at[1][round].rss_kib,
                at[3][round].rss_kib
            );
        }
        let rss = |m: &[Memory]| m.iter().map(|m| m.rss_kib).collect::<Vec<_>>();
        let anon = |m: &[Memory]| m.iter().map(|m| m.anon_kib).collect::<Vec<_>>();
        let per_vm = |m: &[Memory], n: f64| {
            m.iter()
                .map(|m| (m.rss_kib - idle.rss_kib) / n)
                .collect::<Vec<_>>()
        };
        let after = report::median(&rss(&at[3]));
        let mut figures = vec![
            Figure::new(SECTION, "resident, just started", "KiB", vec![cold.rss_kib]),
            Figure::new(SECTION, "anon, just started", "KiB", vec![cold.anon_kib]),
            Figure::new(SECTION, "resident, idle", "KiB", vec![idle.rss_kib]),
            Figure::new(SECTION, "anon, idle", "KiB", vec![idle.anon_kib]),
        ];
        for (i, what) in [
            "100 VMs defined",
            "1 000 VMs defined",
            "1 000 defined, 20 running",
            "all deleted",
        ]
        .iter()
        .enumerate()
        {
            figures.push(Figure::new(
                SECTION,
                &format!("resident, {what}"),
                "KiB",
                rss(&at[i]),
            ));
            figures.push(Figure::new(
                SECTION,
                &format!("anon, {what}"),
                "KiB",
                anon(&at[i]),
            ));
        }
        let per_100 = per_vm(&at[0], 100.0);
        let per_1000 = per_vm(&at[1], 1000.0);
        figures.push(Figure::new(
            SECTION,
            "per VM defined, of 100",
            "KiB",
            per_100,
        ));
        figures.push(Figure::new(
            SECTION,
            "per VM defined, of 1 000",
            "KiB",
            per_1000.clone(),
        ));
        Report {
            figures,
            targets: vec![
                Target::new(
                    SECTION,
                    "resident, idle",
                    idle.rss_kib,
                    IDLE_LIMIT_KIB,
                    "KiB",
                ),
                Target::new(
                    SECTION,
                    "per VM defined, of 1 000 (median)",
                    report::median(&per_1000),
                    PER_VM_LIMIT_KIB,
                    "KiB",
                ),
                Target::new(
                    SECTION,
                    "all deleted / idle - 1 (median)",
                    after / idle.rss_kib - 1.0,
                    BACK_LIMIT,
                    "ratio",
                ),
            ],
        }
    })
}
