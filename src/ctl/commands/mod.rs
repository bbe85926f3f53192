//! The commands, each in a file of its own, and what they share: the connection, finding a
//! VM by name or id, choosing VMs by name, lab or all, and telling a refusal because a VM
//! does not run (exit code 3) from the others.

mod capture;
mod console;
mod create;
mod delete;
mod get;
mod info;
mod lab;
mod lifecycle;
mod link;
mod link_state;
mod list;
mod set;
mod show;
mod stop;
mod up;
mod vm;
pub(crate) mod wait;
mod watch;

use zbus::proxy::CacheProperties;
use zbus::OwnedObjectPath;

use crate::bus::{self, Target};
use crate::cli::{Cli, Command, LinkSet, Vms};
use crate::error::{error_name, Error, Result};
use crate::pager;
use crate::proxies::{ManagerProxy, VmProxy};
pub(crate) use crate::snapshot::vm_at;
use crate::snapshot::Snapshot;

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
    // Colours are decided on the terminal, before a pager takes stdout.
    crate::output::stdout_colour();
    let _pager = paged(&cli.command).then(|| pager::start(cli.no_pager));
    match cli.command {
        Command::List(l) => list::run(&conn, l.json.json, l.lab.as_deref(), legend).await,
        Command::Show(s) => show::run(&conn, s).await,
        Command::Create(c) => create::run(&conn, c).await,
        Command::Set { vm, settings } => set::run(&conn, &vm, &settings).await,
        Command::Start(v) => lifecycle::run(&conn, Action::Start, &v).await,
        Command::Stop(s) => stop::run(&conn, &s.vms, s.timeout).await,
        Command::Poweroff(v) => lifecycle::run(&conn, Action::PowerOff, &v).await,
        Command::DiscardState(v) => lifecycle::run(&conn, Action::DiscardState, &v).await,
        Command::Suspend(v) => lifecycle::run(&conn, Action::Suspend, &v).await,
        Command::Resume(v) => lifecycle::run(&conn, Action::Resume, &v).await,
        Command::Reload(v) => lifecycle::run(&conn, Action::Reload, &v).await,
        Command::ResetDisks(v) => lifecycle::run(&conn, Action::ResetDisks, &v).await,
        Command::RepairDisks { vm } => vm::repair_disks(&conn, &vm).await,
        Command::ResizeDisk { vm, disk, size } => vm::resize_disk(&conn, &vm, &disk, size).await,
        Command::Log { vm } => vm::log(&conn, &vm).await,
        Command::Cmdline { vm } => vm::cmdline(&conn, &vm).await,
        Command::Monitor { vm, command } => vm::monitor(&conn, &vm, &command).await,
        Command::Info => info::run(&conn, legend).await,
        Command::Delete { vms, force } => delete::run(&conn, &vms, force).await,
        Command::Get(g) => get::run(&conn, g).await,
        Command::Console(c) => console::run(&conn, c).await,
        Command::Capture { end, write } => capture::run(&conn, &end, write.as_deref()).await,
        Command::Watch(w) => watch::run(&conn, w).await,
        Command::Wait(w) => wait::run(&conn, w).await,
        Command::Link(l) => match (l.set, l.a, l.b) {
            (Some(LinkSet::Set { end, state }), _, _) => link_state::set(&conn, &end, state).await,
            (None, Some(a), Some(b)) => link::link(&conn, &a, &b).await,
            // clap requires both ends unless `set` is given.
            _ => Err(Error::Link(
                "link takes A:ethN B:ethN, or set VM:ethN STATE".into(),
            )),
        },
        Command::Unlink { end } => link::unlink(&conn, &end).await,
        Command::Links { lab, json } => link::list(&conn, lab.as_deref(), json.json, legend).await,
        Command::Up(up) => up::run(&conn, up).await,
        Command::Down(d) => lab::down(&conn, d).await,
        Command::Destroy { lab, yes } => lab::destroy(&conn, lab, yes).await,
        Command::Graph(g) => lab::graph(&conn, g).await,
    }
}

/// The commands whose output people read at length, which go through a pager on a terminal.
fn paged(command: &Command) -> bool {
    matches!(
        command,
        Command::List(_)
            | Command::Show(_)
            | Command::Log { .. }
            | Command::Cmdline { .. }
            | Command::Info
    )
}

async fn manager(conn: &zbus::Connection) -> Result<ManagerProxy<'static>> {
    ManagerProxy::builder(conn)
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

/// The VMs `which` names, with the names to report them by: those named, in order (see
/// [`find_all`]), or, from one GetManagedObjects, every VM of `--lab` (none is exit 4) or
/// every VM (`--all`).
async fn select(conn: &zbus::Connection, which: &Vms) -> Result<Vec<(String, VmProxy<'static>)>> {
    if !which.all && which.lab.is_none() {
        let vms = find_all(conn, &which.vms).await?;
        return Ok(which.vms.iter().cloned().zip(vms).collect());
    }
    let snapshot = Snapshot::read(conn).await?;
    let mut out = Vec::new();
    for vm in snapshot.select(which.lab.as_deref())? {
        out.push((vm.name(), vm_at(conn, vm.path.clone()).await?));
    }
    Ok(out)
}

/// `e`, the failure of `what` on `vm` (named `name`): a refusal with InvalidState of a VM that
/// does not run is [`Error::NotRunning`], with the state it is in.
async fn refused(vm: &VmProxy<'_>, name: &str, what: &str, e: zbus::Error) -> Error {
    if error_name(&e).as_deref() == Some("org.gns3.Qemu.Error.InvalidState") {
        if let Ok(state) = vm.state().await {
            if !matches!(state.as_str(), "running" | "paused") {
                return Error::NotRunning {
                    what: what.to_string(),
                    vm: name.to_string(),
                    state,
                };
            }
        }
    }
    Error::call(what)(e)
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
