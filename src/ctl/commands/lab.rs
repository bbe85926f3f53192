//! `down`, `destroy` and `graph` of a lab, named by its file or by `--lab NAME`: the daemon
//! knows a lab's VMs by their Project, so an edited or lost file still finds all of them.

use std::io::{BufRead, IsTerminal, Write};

use crate::cli::{Down, Graph, LabRef, Vms};
use crate::error::{Error, Result};
use crate::lab::graph::{self, Edge};
use crate::lab::End;
use crate::links::Link;
use crate::output;
use crate::snapshot::Snapshot;

/// The lab's name: the file's `name`, or `--lab`.
fn name(lab: &LabRef) -> Result<String> {
    match (&lab.file, &lab.lab) {
        (_, Some(name)) => Ok(name.clone()),
        (Some(file), None) => Ok(super::up::read(file)?.name),
        // clap requires one of them.
        (None, None) => Err(Error::NoVmInLab(String::new())),
    }
}

/// Stops every VM of the lab, in parallel, as each one's OnStop says (or powers them all off,
/// `--poweroff`); their disks and links stay for the next `up`.
pub async fn down(conn: &zbus::Connection, down: Down) -> Result<()> {
    let lab = name(&down.lab)?;
    let names = Snapshot::read(conn).await?.members(&lab)?;
    let vms = named(&names);
    if down.poweroff {
        super::lifecycle::run(conn, super::Action::PowerOff, &vms).await?;
    } else {
        super::stop::run(conn, &vms, down.timeout).await?;
    }
    let vms = output::count(names.len(), "VM", "VMs");
    output::print(&format!("Lab {lab} is down: {vms} stopped.\n"))
}

/// Deletes every VM of the lab and its files, after asking (or with `--yes`).
pub async fn destroy(conn: &zbus::Connection, lab: LabRef, yes: bool) -> Result<()> {
    let lab = name(&lab)?;
    let names = Snapshot::read(conn).await?.members(&lab)?;
    if !yes
        && !confirm(&format!(
            "Delete {} of lab {lab} ({}) and their disks? [y/N] ",
            output::count(names.len(), "the VM", "the VMs"),
            names.join(", ")
        ))?
    {
        return Err(Error::NotConfirmed(lab));
    }
    super::delete::run(conn, &named(&names), true).await?;
    let vms = output::count(names.len(), "VM", "VMs");
    output::print(&format!("Lab {lab} is destroyed: {vms} deleted.\n"))
}

/// Asks on the terminal; without one (a script), the answer is no.
fn confirm(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    let mut stderr = std::io::stderr();
    stderr.write_all(question.as_bytes())?;
    stderr.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// The graph of a lab file as written: no bus needed.
pub fn graph_file(file: &std::path::Path, format: graph::Format) -> Result<()> {
    let lab = super::up::read(file)?;
    let edges: Vec<Edge> = lab
        .links
        .iter()
        .map(|l| match &l.to {
            End::Adapter(to) => Edge::Between(l.from.clone(), to.clone()),
            End::Udp { host, port, .. } => Edge::Out(l.from.clone(), format!("{host}:{port}")),
        })
        .collect();
    let nodes: Vec<String> = lab.nodes.into_keys().collect();
    output::print(&graph::render(format, &lab.name, &nodes, &edges))
}

/// The graph of a lab as the daemon's tunnels wire it.
pub async fn graph(conn: &zbus::Connection, args: Graph) -> Result<()> {
    let lab = name(&args.lab)?;
    let vms = Snapshot::read(conn).await?;
    let nodes = vms.members(&lab)?;
    let edges: Vec<Edge> = vms
        .links()
        .into_iter()
        .filter(|l| l.ports().iter().any(|p| nodes.contains(&p.vm)))
        .map(|l| match l {
            Link::Between { a, b, .. } => Edge::Between(a, b),
            Link::Out {
                port, host, remote, ..
            } => Edge::Out(port, format!("{host}:{remote}")),
        })
        .collect();
    output::print(&graph::render(args.format, &lab, &nodes, &edges))
}

/// The VMs `names`, as the lifecycle commands take them.
pub(super) fn named(names: &[String]) -> Vms {
    Vms {
        vms: names.to_vec(),
        lab: None,
        all: false,
    }
}
