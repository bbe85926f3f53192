//! The task that owns one VM. It runs one command at a time, so a VM's operations never
//! interleave; between commands it listens to QEMU (QMP events, process exit) so `State`
//! follows what really happens. Whether a command may run in the VM's state is decided
//! before it does, by `state::verdict`.
//!
//! Its jobs, a file each: `lifecycle.rs` (start, stop, pause, delete, and QEMU's exit),
//! `launch.rs` (what Start runs), `configure.rs` (settings), `tunnels.rs` (UDP tunnels),
//! `readopt.rs` (the QEMU a previous daemon left running), `log.rs` (qemu.log),
//! `console.rs` (the console and monitor), `reset.rs` (ResetDisks, ResizeDisk),
//! `repair.rs` (RepairDisks), `capture.rs` (packet captures), `shutdown.rs` (OnStop shutdown),
//! `save.rs` (OnStop save-state).

mod capture;
mod configure;
mod console;
mod launch;
mod lifecycle;
mod log;
mod readopt;
mod repair;
mod reset;
mod save;
mod shutdown;
mod tunnels;

use std::collections::BTreeMap;
use std::future::pending;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;

use super::changes::Publisher;
use super::error::{Error, Result};
use super::qemu::{FromQemu, Qemu};
use super::runtime::Runtime;
use super::state::{verdict, Op, Verdict};
use super::{Command, Context, Handle, State, Tunnel, View};
use crate::model::Record;

pub use super::qemu::QMP_TIMEOUT;

pub struct Actor {
    ctx: Arc<Context>,
    record: Record,
    state: State,
    accelerated: bool,
    qemu: Option<Qemu>,
    runtime: Runtime,
    /// Shared with the console, which counts its viewers in it.
    view: Arc<Publisher>,
    /// The actor's own inbox, for the monitor port's commands and full captures.
    commands: mpsc::WeakSender<Command>,
    /// The running captures, by adapter.
    captures: BTreeMap<u32, capture::Running>,
    /// A shutdown under way (OnStop shutdown).
    shutdown: Option<shutdown::Shutdown>,
    /// The stop a previous daemon had under way on the QEMU adopted, to go on with.
    left_stop: Option<super::runtime::Stopping>,
    /// A whole saved state is on disk (OnStop save-state), which the next Start loads.
    saved_state: bool,
    /// A Start is loading the saved state: if it fails, the state goes.
    loading: bool,
}

type Inbox = (mpsc::Sender<Command>, mpsc::Receiver<Command>);

/// Starts the actor of a VM whose record is already on disk.
pub fn spawn(ctx: Arc<Context>, record: Record) -> Handle {
    let (actor, inbox) = Actor::new(ctx, record);
    actor.go(inbox)
}

/// Starts the actor of a VM found on disk when the daemon starts, with its QEMU if that
/// still runs.
pub async fn load(ctx: Arc<Context>, record: Record) -> Handle {
    let (mut actor, inbox) = Actor::new(ctx, record);
    actor.readopt().await;
    // A running QEMU has the tunnels' sockets (the daemon cannot bind those ports, and
    // binds them again when it lets go); a stopped VM's ports are the daemon's to hold.
    if actor.qemu.is_none() {
        actor.hold_tunnels();
        actor.find_saved_state().await;
    }
    actor.go(inbox)
}

fn view_of(
    r: &Record,
    state: State,
    (pid, accelerated, viewers): (u32, bool, u32),
    captures: Vec<(u32, String)>,
    saved_state: bool,
) -> View {
    View {
        id: r.id.clone(),
        project: r.project.clone(),
        settings: r.settings.clone(),
        state,
        pid,
        accelerated,
        tunnels: r.tunnels.iter().map(Tunnel::as_tuple).collect(),
        links: links(r),
        exit_status: r.exit_status,
        last_error: r.last_error.clone(),
        console_viewers: viewers,
        captures,
        saved_state,
    }
}

/// What the guest sees of each adapter's link: a carrier where a tunnel is (or everywhere,
/// with ReplicateLinkState false), and whether the tunnel is suspended.
fn links(r: &Record) -> Vec<(u32, bool, bool)> {
    (0..r.settings.adapters)
        .map(|n| {
            let t = r.tunnels.iter().find(|t| t.adapter == n);
            let carrier = t.is_some() || !r.settings.replicate_link_state;
            (n, carrier, t.is_some_and(|t| t.suspended))
        })
        .collect()
}

async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => pending().await,
    }
}

async fn from_qemu(qemu: &mut Option<Qemu>) -> FromQemu {
    match qemu {
        Some(qemu) => qemu.next().await,
        None => pending().await,
    }
}

impl Actor {
    fn new(ctx: Arc<Context>, record: Record) -> (Actor, Inbox) {
        let (tx, rx) = mpsc::channel(16);
        let actor = Actor {
            view: Arc::new(Publisher::new(
                view_of(&record, State::Stopped, (0, false, 0), Vec::new(), false),
                &ctx.changes,
            )),
            commands: tx.downgrade(),
            runtime: Runtime::new(ctx.runtime_dir.join(&record.id)),
            ctx,
            record,
            state: State::Stopped,
            accelerated: false,
            qemu: None,
            captures: BTreeMap::new(),
            shutdown: None,
            left_stop: None,
            saved_state: false,
            loading: false,
        };
        (actor, (tx, rx))
    }

    fn go(self, (tx, rx): Inbox) -> Handle {
        let handle = Handle {
            tx,
            view: self.view.subscribe(),
        };
        tokio::spawn(self.serve(rx));
        handle
    }

    async fn serve(mut self, mut rx: mpsc::Receiver<Command>) {
        if let Some(left) = self.left_stop.take() {
            self.go_on_with(left).await;
        }
        loop {
            let deadline = self.shutdown_deadline();
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    if self.handle(cmd).await {
                        break;
                    }
                }
                from = from_qemu(&mut self.qemu) => match from {
                    FromQemu::Exited(exit) => {
                        let ending = self.ending_now();
                        self.exited(exit, ending).await;
                        self.answer_shutdown(&Ok(()));
                    }
                    FromQemu::Event(event) => self.event(event),
                },
                () = until(deadline) => self.shutdown_overdue().await,
            }
        }
    }

    /// Runs one command; true once the VM is deleted. The long calls are boxed: held inline,
    /// the largest of them would size every idle VM's task (some 6 KiB each).
    async fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Configure(changes, reply) => {
                let _ = reply.send(Box::pin(self.configure(changes)).await);
            }
            Command::Start(reply) => {
                let _ = reply.send(self.perform(Op::Start).await);
            }
            Command::Stop(reply) => Box::pin(self.stop_command(reply)).await,
            Command::PowerOff(reply) => {
                let _ = reply.send(self.perform(Op::PowerOff).await);
            }
            Command::Suspend(reply) => {
                let _ = reply.send(self.perform(Op::Suspend).await);
            }
            Command::Resume(reply) => {
                let _ = reply.send(self.perform(Op::Resume).await);
            }
            Command::Reload(reply) => {
                let _ = reply.send(self.perform(Op::Reload).await);
            }
            Command::AddTunnel(t, reply) => {
                let _ = reply.send(Box::pin(self.add_tunnel(t)).await);
            }
            Command::RemoveTunnel(adapter, reply) => {
                let _ = reply.send(Box::pin(self.remove_tunnel(adapter)).await);
            }
            Command::SetLinkSuspended(adapter, suspended, reply) => {
                let fut = self.set_link_suspended(adapter, suspended);
                let _ = reply.send(Box::pin(fut).await);
            }
            Command::CommandLine(reply) => {
                let _ = reply.send(self.command_line());
            }
            Command::ReadLog(reply) => {
                let _ = reply.send(self.read_log());
            }
            Command::OpenConsole(options, reply) => {
                let _ = reply.send(self.open_console(options));
            }
            Command::ReadConsole(max_bytes, reply) => {
                let _ = reply.send(self.read_console(max_bytes));
            }
            Command::HumanMonitorCommand(command, reply) => {
                let _ = reply.send(Box::pin(self.human_monitor_command(command)).await);
            }
            Command::OpenGraphics(reply) => {
                let _ = reply.send(Box::pin(self.open_graphics()).await);
            }
            Command::GraphicsClient(client, reply) => {
                let _ = reply.send(Box::pin(self.graphics_client(client)).await);
            }
            Command::ResetDisks(reply) => {
                let _ = reply.send(self.perform(Op::ResetDisks).await);
            }
            Command::DiscardSavedState(reply) => {
                let _ = reply.send(self.perform(Op::DiscardSavedState).await);
            }
            Command::ResizeDisk(disk, bytes, reply) => {
                let _ = reply.send(Box::pin(self.resize_disk(&disk, bytes)).await);
            }
            Command::RepairDisks(reply) => {
                let _ = reply.send(Box::pin(self.repair_disks()).await);
            }
            Command::StartCapture(adapter, asked, reply) => {
                let _ = reply.send(Box::pin(self.start_capture(adapter, asked)).await);
            }
            Command::StopCapture(adapter, reply) => {
                let _ = reply.send(Box::pin(self.stop_capture(adapter)).await);
            }
            Command::OpenCapture(adapter, reply) => {
                let _ = reply.send(self.open_capture(adapter));
            }
            Command::CaptureFull(adapter, path) => Box::pin(self.capture_full(adapter, path)).await,
            Command::Delete(reply) => {
                let result = self.perform(Op::Delete).await;
                let deleted = result.is_ok();
                let _ = reply.send(result);
                return deleted;
            }
        }
        false
    }

    /// What the VM's state makes of `op`: the operation to run, None if there is nothing
    /// to do, or why it is refused.
    fn admit(&self, op: Op) -> Result<Option<Op>> {
        match verdict(self.state, op) {
            Verdict::Go => Ok(Some(op)),
            Verdict::Instead(other) => Ok(Some(other)),
            Verdict::Join => Ok(Some(op)),
            Verdict::Done => Ok(None),
            refused => Err(self.refusal(refused, op)),
        }
    }

    /// Runs `op` if the VM's state allows it, or says why not.
    async fn perform(&mut self, op: Op) -> Result<()> {
        let Some(op) = self.admit(op)? else {
            return Ok(());
        };
        match op {
            Op::Start => Box::pin(self.start()).await,
            Op::Stop => Box::pin(self.stop()).await,
            Op::PowerOff => Box::pin(self.power_off()).await,
            Op::Suspend => Box::pin(self.suspend()).await,
            Op::Resume => Box::pin(self.resume()).await,
            Op::Reload => Box::pin(self.reload()).await,
            Op::Delete => Box::pin(self.delete()).await,
            Op::ResetDisks => Box::pin(self.reset_disks()).await,
            Op::DiscardSavedState => Box::pin(self.discard_saved_state()).await,
            Op::Rewire
            | Op::Configure
            | Op::ConfigureStopped
            | Op::Console
            | Op::ResizeDisk
            | Op::RepairDisks
            | Op::Capture => Err(Error::Internal(format!(
                "{op:?} takes arguments and is not performed alone"
            ))),
        }
    }

    /// The error of an operation the VM's state refuses.
    fn refusal(&self, verdict: Verdict, op: Op) -> Error {
        let (name, state) = (self.name(), self.state);
        Error::InvalidState(match verdict {
            Verdict::NotRunning => format!(
                "cannot {} VM '{name}': it is {state}; start it first",
                format!("{op:?}").to_lowercase()
            ),
            Verdict::Holds => {
                format!("cannot change VM '{name}' while it is {state}: QEMU holds it; stop the VM first")
            }
            _ => format!("VM '{name}' is {state}; try again once that is done"),
        })
    }

    /// The running QEMU, for a command the VM's state has admitted.
    fn running(&mut self) -> Result<&mut Qemu> {
        self.qemu
            .as_mut()
            .ok_or_else(|| Error::InvalidState("QEMU is not running".into()))
    }

    fn name(&self) -> &str {
        &self.record.settings.name
    }

    fn id(&self) -> &str {
        &self.record.id
    }

    fn publish(&self) {
        let pid = self.qemu.as_ref().map_or(0, |r| r.process.pid());
        let viewers = self
            .qemu
            .as_ref()
            .and_then(|q| q.console.as_ref())
            .map_or(0, |c| c.viewers());
        let captures = self
            .captures
            .values()
            .map(capture::Running::entry)
            .collect();
        let view = view_of(
            &self.record,
            self.state,
            (pid, self.accelerated, viewers),
            captures,
            self.saved_state,
        );
        self.view.send_if_modified(|old| {
            let changed = *old != view;
            *old = view;
            changed
        });
    }

    fn set_state(&mut self, next: State) {
        if self.state == next {
            return;
        }
        if !self.state.can_become(next) {
            // A bug, not a user error: keep going with what QEMU really does.
            tracing::error!(vm_id = %self.id(), from = %self.state, to = %next, "illegal state change");
        }
        tracing::info!(vm_id = %self.id(), vm_name = %self.name(), state = %next, "state changed");
        self.state = next;
        self.publish();
    }

    fn vm_dir(&self) -> PathBuf {
        self.ctx.store.vm_dir(self.id())
    }

    async fn save(&self, record: Record) -> Result<()> {
        let store = self.ctx.store.clone();
        tokio::task::spawn_blocking(move || store.save(&record))
            .await
            .map_err(|e| Error::Internal(format!("the save task failed: {e}")))??;
        Ok(())
    }
}
