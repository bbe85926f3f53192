//! The commands, each in a file of its own, and what they share: the connection and finding
//! a VM by name or id.

mod create;
mod delete;
mod info;
mod lab;
mod lifecycle;
mod link;
mod list;
mod set;
mod show;
mod up;
mod vm;

use zbus::proxy::CacheProperties;
use zbus::OwnedObjectPath;

use crate::bus::{self, Target};
use crate::cli::{Cli, Command};
use crate::error::{error_name, Error, Result};
use crate::proxies::{ManagerProxy, VmProxy};

pub use lifecycle::Action;

pub async fn run(cli: Cli) -> Result<()> {
    let target = match (cli.address, cli.host) {
        (Some(a), _) => Target::Address(a),
        (None, Some(h)) => Target::Host(h),
        (None, None) => Target::System,
    };
    // A lab file's graph needs no daemon.
    if let Command::Graph(g) = &cli.command {
        if let (Some(file), None) = (&g.lab.file, &g.lab.lab) {
            return lab::graph_file(file, g.format);
        }
    }
    let conn = bus::connect(&target).await?;
    let legend = !cli.no_legend;
    match cli.command {
        Command::List(j) => list::run(&conn, j.json, legend).await,
        Command::Show(s) => show::run(&conn, s).await,
        Command::Create(c) => create::run(&conn, c).await,
        Command::Set { vm, settings } => set::run(&conn, &vm, &settings).await,
        Command::Start(v) => lifecycle::run(&conn, Action::Start, &v.vms).await,
        Command::Stop(v) => lifecycle::run(&conn, Action::Stop, &v.vms).await,
        Command::Suspend(v) => lifecycle::run(&conn, Action::Suspend, &v.vms).await,
        Command::Resume(v) => lifecycle::run(&conn, Action::Resume, &v.vms).await,
        Command::Reload(v) => lifecycle::run(&conn, Action::Reload, &v.vms).await,
        Command::Log { vm } => vm::log(&conn, &vm).await,
        Command::Cmdline { vm } => vm::cmdline(&conn, &vm).await,
        Command::Monitor { vm, command } => vm::monitor(&conn, &vm, &command).await,
        Command::Info => info::run(&conn, legend).await,
        Command::Delete { vms, force } => delete::run(&conn, &vms.vms, force).await,
        Command::Link { a, b } => link::link(&conn, &a, &b).await,
        Command::Unlink { end } => link::unlink(&conn, &end).await,
        Command::Links { lab, json } => link::list(&conn, lab.as_deref(), json.json, legend).await,
        Command::Up(up) => up::run(&conn, up).await,
        Command::Down(lab) => lab::down(&conn, lab).await,
        Command::Destroy { lab, yes } => lab::destroy(&conn, lab, yes).await,
        Command::Graph(g) => lab::graph(&conn, g).await,
    }
}

async fn manager(conn: &zbus::Connection) -> Result<ManagerProxy<'static>> {
    ManagerProxy::builder(conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(Error::Connect)
}

async fn vm_at(conn: &zbus::Connection, path: OwnedObjectPath) -> Result<VmProxy<'static>> {
    VmProxy::builder(conn)
        .path(path)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(Error::Connect)
}

/// The object path of the VM named `name` (or with that id).
async fn find_path(manager: &ManagerProxy<'_>, name: &str) -> Result<OwnedObjectPath> {
    manager.get_vm(name).await.map_err(|e| {
        if error_name(&e).as_deref() == Some("org.gns3.Qemu.Error.NotFound") {
            Error::NoSuchVm(name.to_string())
        } else {
            Error::Call {
                what: format!("find {name}"),
                source: e,
            }
        }
    })
}

/// The VM named `name` (or with that id).
async fn find(conn: &zbus::Connection, name: &str) -> Result<VmProxy<'static>> {
    let path = find_path(&manager(conn).await?, name).await?;
    vm_at(conn, path).await
}

/// Every VM of `names`, in order; the first that does not exist is the error, before
/// anything is done to any of them.
async fn find_all(conn: &zbus::Connection, names: &[String]) -> Result<Vec<VmProxy<'static>>> {
    let manager = manager(conn).await?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        out.push(vm_at(conn, find_path(&manager, name).await?).await?);
    }
    Ok(out)
}
