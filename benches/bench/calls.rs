//! Round trips of the calls a front end makes most: a property `Get` on a VM and
//! `ListVMs`, with 1, 100 and 1 000 VMs defined. The floor is the bus itself answering
//! `org.freedesktop.DBus.GetId`: one hop to the bus and back, where the daemon's calls take
//! two. Every call is made by the same client code, and the floor's calls are interleaved
//! with the daemon's.

use crate::lab::{small_vm, time_calls, BenchLab};
use crate::report::{self, Figure, Report, Target};
use tokio::runtime::Runtime;

const SECTION: &str = "calls";
/// Calls per figure, made in BATCHES interleaved batches.
const CALLS: usize = 2_000;
const LIST_CALLS: usize = 200;
const BATCHES: usize = 10;
/// A `Get` may take this many times the bus's own answer.
const GET_LIMIT: f64 = 3.0;

const BUS_ID: (&str, &str, &str, &str) = (
    "org.freedesktop.DBus",
    "/org/freedesktop/DBus",
    "org.freedesktop.DBus",
    "GetId",
);

pub fn run(rt: &Runtime) -> Report {
    rt.block_on(async {
        let lab = BenchLab::start().await;
        let mut report = Report::default();
        let mut paths = Vec::new();
        for n in [1, 100, 1_000] {
            eprintln!("defining {} VMs", n - paths.len());
            let more = lab
                .create_many(&format!("calls{n}"), n - paths.len(), &small_vm())
                .await;
            paths.extend(more);
            let vm = paths[paths.len() / 2].to_string();
            let get = (
                "org.gns3.Qemu",
                vm.as_str(),
                "org.freedesktop.DBus.Properties",
                "Get",
            );
            let list = (
                "org.gns3.Qemu",
                "/org/gns3/Qemu",
                "org.gns3.Qemu.Manager",
                "ListVMs",
            );
            // Warm-up, not counted.
            time_calls(&lab.conn, get, &("org.gns3.Qemu.VM", "State"), 100).await;
            time_calls(&lab.conn, BUS_ID, &(), 100).await;
            let (mut floor, mut gets, mut lists) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..BATCHES {
                floor.extend(time_calls(&lab.conn, BUS_ID, &(), CALLS / BATCHES).await);
                gets.extend(
                    time_calls(
                        &lab.conn,
                        get,
                        &("org.gns3.Qemu.VM", "State"),
                        CALLS / BATCHES,
                    )
                    .await,
                );
                lists.extend(time_calls(&lab.conn, list, &(), LIST_CALLS / BATCHES).await);
            }
            let ratio = report::median(&gets) / report::median(&floor);
            eprintln!(
                "{n} VMs: GetId {:.0} µs, Get {:.0} µs, ListVMs {:.0} µs (medians)",
                report::median(&floor),
                report::median(&gets),
                report::median(&lists)
            );
            let vms = if n == 1 {
                "1 VM".to_string()
            } else {
                format!("{n} VMs")
            };
            report.figures.extend([
                Figure::new(SECTION, &format!("bus GetId (floor), {vms}"), "µs", floor),
                Figure::new(SECTION, &format!("Get State, {vms}"), "µs", gets),
                Figure::new(SECTION, &format!("ListVMs, {vms}"), "µs", lists),
            ]);
            report.targets.push(Target::new(
                SECTION,
                &format!("Get / GetId (medians), {vms}"),
                ratio,
                GET_LIMIT,
                "ratio",
            ));
        }
        report
    })
}
