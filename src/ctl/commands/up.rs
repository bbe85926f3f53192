//! `up FILE`: makes the daemon's VMs what the lab file says, in the order that keeps every
//! step legal (create, unwire, configure, wire, prune, start), each step's calls in parallel.
//! What `up` decides is `lab::plan`'s; this file only makes the calls and tells what it did.
//! A step that fails ends `up` with its error; the next `up` goes on from where it stopped.

use std::path::Path;

use super::lifecycle::all_at_once;
use super::link::{unwire, wire};
use super::wait::Goal;
use crate::cli::Up;
use crate::contract::{call_args, DEFAULT_ADAPTERS};
use crate::error::{Error, Result};
use crate::lab::{self, plan, Lab};
use crate::output;
use crate::snapshot::Snapshot;

/// The lab in `file`, checked against the contract.
pub fn read(file: &Path) -> Result<Lab> {
    let shown = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|source| Error::ReadFile {
        file: shown.clone(),
        source,
    })?;
    Ok(lab::parse(
        &shown,
        &text,
        &lab::contract_properties(),
        DEFAULT_ADAPTERS,
    )?)
}

/// What was done, for people (one line per step) and for `--json`.
#[derive(Default)]
struct Done {
    lines: Vec<String>,
    json: serde_json::Map<String, serde_json::Value>,
}

impl Done {
    fn step(&mut self, key: &str, verb: &str, items: Vec<String>) {
        if !items.is_empty() {
            self.lines.push(format!("{verb} {}.", items.join(", ")));
        }
        self.json.insert(key.into(), items.into());
    }
}

pub async fn run(conn: &zbus::Connection, args: Up) -> Result<()> {
    let lab = read(&args.file)?;
    let before = Snapshot::read(conn).await?;
    let plan = plan::plan_at(&lab, &before.vms, &before.here, DEFAULT_ADAPTERS).map_err(|why| {
        Error::Lab {
            lab: lab.name.clone(),
            why,
        }
    })?;
    let manager = super::manager(conn).await?;
    let mut done = Done::default();

    all_at_once(plan.create.iter().map(|(name, settings)| {
        let manager = &manager;
        async move {
            manager
                .create_vm(name, call_args(settings))
                .await
                .map(drop)
                .map_err(Error::call(format!("create {name}")))
        }
    }))
    .await?;
    done.step("created", "Created", names(&plan.create));
    // The new VMs' paths, for the steps after.
    let vms = if plan.create.is_empty() {
        before
    } else {
        Snapshot::read(conn).await?
    };

    unwire(conn, &vms, &plan.unwire).await?;
    done.step(
        "unlinked",
        "Unlinked",
        plan.unwire.iter().map(ToString::to_string).collect(),
    );

    all_at_once(plan.configure.iter().map(|(name, settings)| {
        let vms = &vms;
        async move {
            let vm = vms.proxy(conn, name).await?;
            vm.configure(call_args(settings))
                .await
                .map_err(Error::call(format!("configure {name}")))
        }
    }))
    .await?;
    done.step(
        "configured",
        "Configured",
        plan.configure
            .iter()
            .map(|(name, s)| {
                let keys: Vec<&str> = s.keys().map(String::as_str).collect();
                format!("{name} ({})", keys.join(", "))
            })
            .collect(),
    );

    all_at_once(plan.wire.iter().map(|w| wire(conn, &vms, w))).await?;
    done.step(
        "linked",
        "Linked",
        plan.wire.iter().map(ToString::to_string).collect(),
    );

    let pruned = if args.prune {
        plan.extra.clone()
    } else {
        Vec::new()
    };
    if !pruned.is_empty() {
        super::delete::run(conn, &super::lab::named(&pruned), true).await?;
    }
    done.step("deleted", "Deleted", pruned);

    let vms = &vms;
    all_at_once(plan.start.iter().map(|name| async move {
        vms.proxy(conn, name)
            .await?
            .start()
            .await
            .map_err(Error::call(format!("start {name}")))
    }))
    .await?;
    done.step("started", "Started", plan.start.clone());

    let file = args.file.display();
    let mut left = Vec::new();
    for (name, settings) in &plan.blocked {
        left.push(format!(
            "{name}: {} not changed: {name} runs, and only a stopped VM takes {}. \
             Bring the lab down (gns3-qemuctl down {file}) and up again.",
            settings.join(", "),
            if settings.len() == 1 { "it" } else { "them" },
        ));
    }
    for w in &plan.waiting {
        left.push(format!(
            "{w} not linked: it needs an adapter its VM gets only when stopped."
        ));
    }
    if !args.prune {
        for name in &plan.extra {
            left.push(format!(
                "{name} is in lab {} but not in {file}: kept (up --prune deletes it).",
                lab.name
            ));
        }
    }
    let summary = format!(
        "Lab {} is up: {}, {}.",
        lab.name,
        output::count(lab.nodes.len(), "VM", "VMs"),
        output::count(lab.links.len(), "link", "links")
    );
    let wait = async {
        if !args.wait {
            return Ok(());
        }
        let goals = lab
            .nodes
            .iter()
            .map(|(name, node)| Goal {
                name: name.clone(),
                state: Some("running".into()),
                console: node.ready.console.clone(),
            })
            .collect();
        super::wait::until(conn, goals, args.timeout).await
    };
    if args.json.json {
        // One document, once everything is known.
        wait.await?;
        done.json.insert("lab".into(), lab.name.clone().into());
        done.json.insert("ready".into(), args.wait.into());
        done.json.insert("notes".into(), left.clone().into());
        output::print_json(&done.json.into())?;
    } else {
        done.lines.push(summary);
        output::print(&format!("{}\n", done.lines.join("\n")))?;
        for line in &left {
            eprintln!("{line}");
        }
        wait.await?;
        if args.wait {
            output::print(&format!("Lab {} is ready.\n", lab.name))?;
        }
    }
    if plan.blocked.is_empty() && plan.waiting.is_empty() {
        Ok(())
    } else {
        Err(Error::Unapplied(lab.name))
    }
}

fn names<T>(items: &[(String, T)]) -> Vec<String> {
    items.iter().map(|(n, _)| n.clone()).collect()
}
