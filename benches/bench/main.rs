//! The project's benchmark: `cargo bench --bench bench [-- [--json PATH] [SECTION...]]`.
//!
//! Each section is a module with `run(&Runtime) -> Report` and measures the release daemon
//! on a private bus, with real QEMU under TCG, driven the way the integration tests drive
//! them (tests/common). Only the sections whose name contains one of the SECTION arguments
//! run (all without any). The tables of figures and of targets go to stdout, progress to
//! stderr, and every run's values to a JSON file: `$CARGO_TARGET_DIR/bench/bench.json`
//! (default `target/bench/bench.json`) or `--json PATH`.

mod calls;
mod cli;
#[path = "../../tests/common/mod.rs"]
mod common;
mod console;
mod cycle;
mod gns3;
mod hand;
mod lab;
mod memory;
mod parallel;
mod relay;
mod report;
mod ring;
mod scale;
mod tunnels;

use report::Report;
use std::path::PathBuf;
use std::time::Instant;
use tokio::runtime::Runtime;

struct Section {
    name: &'static str,
    run: fn(&Runtime) -> Report,
}

const SECTIONS: &[Section] = &[
    Section {
        name: "cycle",
        run: cycle::run,
    },
    Section {
        name: "calls",
        run: calls::run,
    },
    Section {
        name: "parallel",
        run: parallel::run,
    },
    Section {
        name: "memory",
        run: memory::run,
    },
    Section {
        name: "tunnels",
        run: tunnels::run,
    },
    Section {
        name: "console",
        run: console::run,
    },
    Section {
        name: "cli",
        run: cli::run,
    },
    Section {
        name: "gns3",
        run: gns3::run,
    },
    Section {
        name: "scale",
        run: scale::run,
    },
];

fn main() {
    let mut json = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")))
        .join("bench/bench.json");
    let mut filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            // cargo bench passes --bench to every bench binary, harness or not.
            "--bench" => {}
            "--json" => json = args.next().expect("--json needs a PATH").into(),
            flag if flag.starts_with('-') => panic!(
                "unknown flag {flag}; usage: cargo bench --bench bench -- [--json PATH] [SECTION...]"
            ),
            filter => filters.push(filter.to_string()),
        }
    }
    let chosen: Vec<&Section> = SECTIONS
        .iter()
        .filter(|s| filters.is_empty() || filters.iter().any(|f| s.name.contains(f.as_str())))
        .collect();
    assert!(
        !chosen.is_empty(),
        "no section matches {filters:?}; sections: {:?}",
        SECTIONS.iter().map(|s| s.name).collect::<Vec<_>>()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    let started = Instant::now();
    let mut all = Report::default();
    for section in chosen {
        eprintln!("== {}", section.name);
        let Report { figures, targets } = (section.run)(&rt);
        all.figures.extend(figures);
        all.targets.extend(targets);
    }
    let seconds = started.elapsed().as_secs_f64();
    report::print_table(&all.figures);
    report::print_targets(&all.targets);
    report::write_json(&json, &all.figures, &all.targets, seconds);
    eprintln!("{seconds:.0} s; figures written to {}", json.display());
}
