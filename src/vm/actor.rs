//! The task that owns one VM. It runs one command at a time, so a VM's operations never
//! interleave; between commands it listens to QEMU (QMP events, process exit) so `State`
//! follows what really happens.

use nix::sys::signal::Signal;
use serde_json::json;
use std::future::pending;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

use super::adopt::{self, Pending};
use super::binary::Capabilities;
use super::claims::Claims;
use super::error::{Error, Result};
use super::process::{Exit, Process};
use super::qmp::{self, Event, Qmp};
use super::settings;
use super::tunnel::{self, Backend, Tunnel};
use super::{cmdline, disks, lock, network, Command, Context, Handle, Pool, State, View};
use crate::model::Record;
use crate::model::{Accelerator, Priority, Setting, Settings};
use crate::privilege::Privilege;

/// How long a QMP command may take before the VM is deemed stuck.
pub const QMP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long QEMU gets to exit after `quit`, then after SIGTERM, before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How much of qemu.log an error message carries.
const LOG_TAIL_LINES: usize = 5;
/// The largest part of qemu.log `ReadLog` returns (its end).
const MAX_LOG: u64 = 1 << 20;

struct Running {
    process: Process,
    qmp: Qmp,
    /// What the running binary offers (QemuPath may change under it).
    caps: Arc<Capabilities>,
    events: mpsc::UnboundedReceiver<Event>,
    /// The reason QEMU gave in its SHUTDOWN event, to tell a guest power-off from a crash.
    shutdown: Option<String>,
    /// A CPU limit was put on it, which must be released once it exits.
    throttled: bool,
}

enum FromQemu {
    Exited(Exit),
    Event(Event),
}

impl Running {
    async fn next(&mut self) -> FromQemu {
        tokio::select! {
            exit = self.process.exited() => FromQemu::Exited(exit),
            Some(event) = self.events.recv() => FromQemu::Event(event),
        }
    }

    /// Puts `to`'s priority and CPU limit on QEMU, those that differ from `from` (all of
    /// them at start); if the limit fails, the priority goes back.
    async fn limit(
        &mut self,
        privilege: &Privilege,
        name: &str,
        from: Option<&Settings>,
        to: &Settings,
    ) -> Result<()> {
        let (pid, priority) = (self.process.pid(), to.process_priority);
        let renice = from.is_none_or(|f| f.process_priority != priority);
        if renice && !privilege.is_at(pid, priority.nice()) {
            privilege
                .renice(pid, self.process.pidfd(), priority.nice())
                .await
                .map_err(|e| {
                    Error::PrivilegeFailed(format!(
                        "cannot give VM '{name}' ProcessPriority '{}' (nice {}): {e}",
                        priority.as_str(),
                        priority.nice()
                    ))
                })?;
        }
        let percent = to.cpu_throttling;
        let throttle = from.map_or(percent > 0, |f| f.cpu_throttling != percent);
        if !throttle {
            return Ok(());
        }
        if let Err(e) = privilege.throttle(pid, self.process.pidfd(), percent).await {
            if let Some(old) = from.filter(|_| renice) {
                let nice = old.process_priority.nice();
                if let Err(e) = privilege.renice(pid, self.process.pidfd(), nice).await {
                    tracing::error!(pid, "cannot put the previous priority back: {e}");
                }
            }
            return Err(Error::PrivilegeFailed(format!(
                "cannot set CpuThrottling of VM '{name}' to {percent}%: {e}"
            )));
        }
        self.throttled |= percent > 0;
        Ok(())
    }

    async fn set_link(&mut self, adapter: u32, up: bool) -> Result<()> {
        let args = json!({ "name": network::adapter_netdev(adapter), "up": up });
        self.qmp
            .execute("set_link", Some(args), QMP_TIMEOUT)
            .await?;
        Ok(())
    }

    /// Joins `t`'s UDP netdev to its adapter's hub, then raises the link.
    async fn plug(&mut self, t: &Tunnel, legacy: bool, udp_host: IpAddr) -> Result<()> {
        let backend = Backend::choose(legacy, &self.caps);
        let ep = tunnel::resolve(t, backend, udp_host).await?;
        let n = t.adapter;
        if backend == Backend::Dgram {
            let socket = tunnel::bind(&ep)?;
            let args = json!({ "fdname": tunnel::tunnel_netdev(n) });
            // QEMU keeps its own copy of the descriptor; ours closes when `socket` drops.
            self.qmp
                .execute_with_fd("getfd", args, socket.as_fd(), QMP_TIMEOUT)
                .await?;
        }
        for args in [
            tunnel::netdev_args(n, backend, &ep),
            tunnel::hubport_args(n),
        ] {
            self.qmp
                .execute("netdev_add", Some(args), QMP_TIMEOUT)
                .await?;
        }
        self.set_link(n, true).await
    }

    /// Lowers adapter `adapter`'s link and removes its tunnel's netdevs, whichever exist.
    async fn unplug(&mut self, adapter: u32) -> Result<()> {
        self.set_link(adapter, false).await?;
        for id in [
            tunnel::hubport_netdev(adapter),
            tunnel::tunnel_netdev(adapter),
        ] {
            match self
                .qmp
                .execute("netdev_del", Some(json!({ "id": id })), QMP_TIMEOUT)
                .await
            {
                Err(qmp::Error::Command { class, .. }) if class == "DeviceNotFound" => {}
                other => {
                    other?;
                }
            }
        }
        // A descriptor passed for a netdev_add that then failed is still parked under
        // its name; there is usually none.
        let args = json!({ "fdname": tunnel::tunnel_netdev(adapter) });
        let _ = self.qmp.execute("closefd", Some(args), QMP_TIMEOUT).await;
        Ok(())
    }

    /// Puts tunnel `to` (or none) on `adapter` in place of `from`; if that fails, puts
    /// `from` back as well as QEMU lets it.
    async fn rewire(
        &mut self,
        adapter: u32,
        from: Option<&Tunnel>,
        to: Option<&Tunnel>,
        legacy: bool,
        udp_host: IpAddr,
    ) -> Result<()> {
        let result = self.swap(adapter, to, legacy, udp_host).await;
        if result.is_err() {
            if let Err(e) = self.swap(adapter, from, legacy, udp_host).await {
                tracing::error!(adapter, "cannot put the previous tunnel back: {e}");
            }
        }
        result
    }

    async fn swap(
        &mut self,
        adapter: u32,
        to: Option<&Tunnel>,
        legacy: bool,
        udp_host: IpAddr,
    ) -> Result<()> {
        self.unplug(adapter).await?;
        match to {
            Some(t) => self.plug(t, legacy, udp_host).await,
            None => Ok(()),
        }
    }
}

pub struct Actor {
    ctx: Arc<Context>,
    record: Record,
    state: State,
    accelerated: bool,
    run: Option<Running>,
    view: watch::Sender<View>,
}

/// Starts the actor of a VM whose record is already on disk.
pub fn spawn(ctx: Arc<Context>, record: Record) -> Handle {
    Actor::new(ctx, record).go()
}

/// Starts the actor of a VM found on disk when the daemon starts, with its QEMU if that
/// still runs.
pub async fn load(ctx: Arc<Context>, record: Record) -> Handle {
    let mut actor = Actor::new(ctx, record);
    actor.readopt().await;
    actor.go()
}

fn view_of(r: &Record, state: State, pid: u32, accelerated: bool) -> View {
    View {
        id: r.id.clone(),
        project: r.project.clone(),
        settings: r.settings.clone(),
        state,
        pid,
        accelerated,
        tunnels: r.tunnels.iter().map(Tunnel::as_tuple).collect(),
        exit_status: r.exit_status,
        last_error: r.last_error.clone(),
    }
}

async fn from_qemu(run: &mut Option<Running>) -> FromQemu {
    match run {
        Some(run) => run.next().await,
        None => pending().await,
    }
}

impl Actor {
    fn new(ctx: Arc<Context>, record: Record) -> Actor {
        Actor {
            view: watch::Sender::new(view_of(&record, State::Stopped, 0, false)),
            ctx,
            record,
            state: State::Stopped,
            accelerated: false,
            run: None,
        }
    }

    fn go(self) -> Handle {
        let (tx, rx) = mpsc::channel(16);
        let handle = Handle {
            tx,
            view: self.view.subscribe(),
        };
        tokio::spawn(self.run(rx));
        handle
    }

    /// Takes back the QEMU a previous daemon left running, or records that it died.
    async fn readopt(&mut self) {
        let rt = self.runtime_dir();
        let found = match adopt::find(&rt, QMP_TIMEOUT).await {
            Ok(None) => return self.clean_runtime(),
            Ok(Some(found)) => found,
            Err(why) => return self.lost(why).await,
        };
        let caps = match self
            .ctx
            .binaries
            .probe(&self.record.settings.qemu_path)
            .await
        {
            Ok(caps) => caps,
            Err(e) => {
                // The binary went (an upgrade?) under a QEMU that still runs from memory.
                tracing::warn!(vm_id = %self.id(), "cannot ask its QEMU binary what it offers: {e}");
                Arc::default()
            }
        };
        let mut run = Running {
            process: found.process,
            qmp: found.qmp,
            caps,
            events: found.events,
            shutdown: None,
            throttled: self.record.settings.cpu_throttling > 0,
        };
        let status = run.qmp.execute("query-status", None, QMP_TIMEOUT).await;
        let kvm = run.qmp.execute("query-kvm", None, QMP_TIMEOUT).await;
        let state = match status.as_ref().map(|s| s["status"].as_str()) {
            Ok(Some("running")) => State::Running,
            // Still in -S: the previous daemon died inside Start, and a Start happens whole
            // or not at all.
            Ok(Some("prelaunch")) | Err(_) => {
                let why = match &status {
                    Ok(_) => "gns3-qemud stopped while it started the VM".to_string(),
                    Err(e) => format!("its QEMU did not answer query-status ({e})"),
                };
                let _ = run.process.signal(Signal::SIGKILL);
                run.process.exited().await;
                self.release(&run).await;
                return self.lost(format!("{why}, so its QEMU was killed")).await;
            }
            Ok(_) => State::Paused,
        };
        self.accelerated = kvm.is_ok_and(|k| k["enabled"].as_bool() == Some(true));
        self.finish_pending(&mut run).await;
        tracing::info!(vm_id = %self.id(), vm_name = %self.name(), pid = run.process.pid(), %state, "found its QEMU running again");
        self.run = Some(run);
        self.state = state;
        self.publish();
    }

    /// Puts the record's version on what the previous daemon was changing live when it
    /// died: the change either reached the record, and is made whole, or did not, and is
    /// undone.
    async fn finish_pending(&mut self, run: &mut Running) {
        let rt = self.runtime_dir();
        let s = &self.record.settings;
        for what in Pending::left(&rt) {
            let done = match what {
                Pending::Tunnel(n) => {
                    let t = self.record.tunnels.iter().find(|t| t.adapter == n);
                    run.swap(n, t, s.legacy_networking, self.ctx.udp_host).await
                }
                Pending::Limits => {
                    // What QEMU has is unknown: compared with settings that differ in both
                    // limits, both are set (a renice is still skipped where every thread
                    // has the value already).
                    run.throttled = true;
                    let mut unknown = s.clone();
                    unknown.cpu_throttling = s.cpu_throttling.wrapping_add(1);
                    if let Some(other) = Priority::ALL
                        .iter()
                        .copied()
                        .find(|p| *p != s.process_priority)
                    {
                        unknown.process_priority = other;
                    }
                    run.limit(&self.ctx.privilege, &s.name, Some(&unknown), s)
                        .await
                }
            };
            match done {
                Ok(()) => {
                    tracing::info!(vm_id = %self.id(), ?what, "finished a change the previous daemon made live")
                }
                Err(e) => {
                    tracing::error!(vm_id = %self.id(), ?what, "cannot bring a change the previous daemon made live in line with the record: {e}")
                }
            }
            what.clear(&rt);
        }
    }

    /// The VM's QEMU did not survive the daemon's absence: the VM is stopped, and says why.
    async fn lost(&mut self, why: String) {
        tracing::warn!(vm_id = %self.id(), vm_name = %self.name(), "{why}");
        self.clean_runtime();
        let mut record = self.record.clone();
        record.exit_status = Exit::Unknown.status();
        record.last_error = why;
        if let Err(e) = self.save(record.clone()).await {
            tracing::error!(vm_id = %self.id(), "cannot record why the VM stopped: {e}");
        }
        self.record = record;
        self.publish();
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        loop {
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    if self.handle(cmd).await {
                        break;
                    }
                }
                from = from_qemu(&mut self.run) => match from {
                    FromQemu::Exited(exit) => self.exited(exit, false).await,
                    FromQemu::Event(event) => self.event(event),
                },
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
                let _ = reply.send(Box::pin(self.start()).await);
            }
            Command::Stop(reply) => {
                let _ = reply.send(Box::pin(self.stop()).await);
            }
            Command::Suspend(reply) => {
                let _ = reply.send(Box::pin(self.suspend()).await);
            }
            Command::Resume(reply) => {
                let _ = reply.send(Box::pin(self.resume()).await);
            }
            Command::Reload(reply) => {
                let _ = reply.send(Box::pin(self.reload()).await);
            }
            Command::AddTunnel(t, reply) => {
                let _ = reply.send(Box::pin(self.add_tunnel(t)).await);
            }
            Command::RemoveTunnel(adapter, reply) => {
                let _ = reply.send(Box::pin(self.remove_tunnel(adapter)).await);
            }
            Command::CommandLine(reply) => {
                let _ = reply.send(self.command_line());
            }
            Command::ReadLog(reply) => {
                let _ = reply.send(self.read_log());
            }
            Command::Delete(reply) => {
                let result = Box::pin(self.delete()).await;
                let deleted = result.is_ok();
                let _ = reply.send(result);
                return deleted;
            }
        }
        false
    }

    fn name(&self) -> &str {
        &self.record.settings.name
    }

    fn id(&self) -> &str {
        &self.record.id
    }

    fn publish(&self) {
        let pid = self.run.as_ref().map_or(0, |r| r.process.pid());
        let view = view_of(&self.record, self.state, pid, self.accelerated);
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

    fn runtime_dir(&self) -> PathBuf {
        self.ctx.runtime_dir.join(self.id())
    }

    async fn save(&self, record: Record) -> Result<()> {
        let store = self.ctx.store.clone();
        tokio::task::spawn_blocking(move || store.save(&record))
            .await
            .map_err(|e| Error::Internal(format!("the save task failed: {e}")))??;
        Ok(())
    }

    fn not_running(&self, what: &str) -> Error {
        Error::InvalidState(format!(
            "cannot {what} VM '{}': it is {}; start it first",
            self.name(),
            self.state
        ))
    }

    // ---- settings ----

    async fn configure(&mut self, changes: Vec<Setting>) -> Result<()> {
        let old = self.record.settings.clone();
        let new = settings::apply(&old, &changes, &self.ctx.limits)?;
        if new == old {
            return Ok(());
        }
        if self.state.is_active() {
            if let Some(key) = settings::needs_stopped_vm(&old, &new) {
                return Err(Error::InvalidState(format!(
                    "cannot change {key} of VM '{}' while it is {}: QEMU holds it; stop the VM first",
                    self.name(),
                    self.state
                )));
            }
        }
        if let Some(t) = self
            .record
            .tunnels
            .iter()
            .find(|t| t.adapter >= new.adapters)
        {
            return Err(Error::InvalidArgument(format!(
                "adapter {} of VM '{}' has a UDP tunnel: remove it (RemoveUdpTunnel) before lowering Adapters to {}",
                t.adapter,
                self.name(),
                new.adapters
            )));
        }
        if new.adapter_type != old.adapter_type || new.qemu_path != old.qemu_path {
            self.ctx
                .binaries
                .check_nic_model(&new.qemu_path, &new.adapter_type)
                .await?;
        }
        let mut claims = Claims::default();
        if let Err(e) = self.claim(&mut claims, &old, &new) {
            claims.undo(&self.ctx);
            return Err(e);
        }
        let name = new.name.clone();
        let limits_change = settings::applies_live(&old, &new);
        let _mark = match self.mark_live(Pending::Limits, limits_change) {
            Ok(mark) => mark,
            Err(e) => {
                claims.undo(&self.ctx);
                return Err(e);
            }
        };
        if let Some(run) = self.run.as_mut() {
            if let Err(e) = run
                .limit(&self.ctx.privilege, &name, Some(&old), &new)
                .await
            {
                claims.undo(&self.ctx);
                return Err(e);
            }
        }
        let mut record = self.record.clone();
        record.settings = new.clone();
        if let Err(e) = self.save(record.clone()).await {
            if let Some(run) = self.run.as_mut() {
                if let Err(e) = run
                    .limit(&self.ctx.privilege, &name, Some(&new), &old)
                    .await
                {
                    tracing::error!(vm_id = %self.record.id, "cannot put the previous priority and CPU limit back: {e}");
                }
            }
            claims.undo(&self.ctx);
            return Err(e);
        }
        self.release_old(&old, &new);
        if let Err(e) = disks::forget(&self.vm_dir(), &old, &new) {
            tracing::warn!(vm_id = %self.id(), "could not remove an old disk overlay: {e}");
        }
        self.record = record;
        tracing::info!(vm_id = %self.id(), vm_name = %self.name(), changed = ?changes.iter().map(Setting::key).collect::<Vec<_>>(), "settings changed");
        self.publish();
        Ok(())
    }

    /// Takes the new name and the new ports before the change is written.
    fn claim(&self, claims: &mut Claims, old: &Settings, new: &Settings) -> Result<()> {
        if new.name != old.name {
            claims.name(&self.ctx, &new.name, self.id())?;
        }
        let old_ports = [old.console_port, old.monitor_port];
        for port in [new.console_port, new.monitor_port] {
            if port != 0 && !old_ports.contains(&port) {
                claims.reserve(&self.ctx, Pool::Console, port, self.id())?;
            }
        }
        Ok(())
    }

    /// The change is written: gives back the name and ports only the old settings held.
    fn release_old(&self, old: &Settings, new: &Settings) {
        if new.name != old.name {
            lock(&self.ctx.names).remove(&old.name);
        }
        let kept = [new.console_port, new.monitor_port];
        let mut ports = self.ctx.ports(Pool::Console);
        for p in [old.console_port, old.monitor_port] {
            if p != 0 && !kept.contains(&p) {
                ports.release(p);
            }
        }
    }

    // ---- lifecycle ----

    fn use_kvm(&self) -> Result<bool> {
        let usable = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .map(drop)
        };
        match self.record.settings.accelerator {
            Accelerator::Tcg => Ok(false),
            Accelerator::Auto => Ok(usable().is_ok()),
            Accelerator::Kvm => usable().map(|_| true).map_err(|e| {
                let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
                    .ok()
                    .flatten()
                    .map_or_else(|| nix::unistd::geteuid().to_string(), |u| u.name);
                Error::StartFailed(format!(
                    "VM '{}' asks for KVM (Accelerator=kvm) but /dev/kvm is not usable by user {user}: {e}. \
                     Add {user} to group kvm (and check the CPU's virtualization is on), or set Accelerator to auto or tcg",
                    self.name()
                ))
            }),
        }
    }

    fn launch_plan(&self, kvm: bool) -> Result<Vec<String>> {
        let pidfile = self.runtime_dir().join(adopt::PIDFILE);
        cmdline::build(&cmdline::Launch {
            settings: &self.record.settings,
            vm_dir: &self.vm_dir(),
            pidfile: &pidfile,
            console_host: &self.ctx.console_host,
            kvm,
        })
    }

    fn command_line(&self) -> Result<Vec<String>> {
        self.launch_plan(self.use_kvm()?)
    }

    async fn start(&mut self) -> Result<()> {
        match self.state {
            State::Running => return Ok(()),
            State::Paused => return self.resume().await,
            State::Stopped => {}
            State::Starting | State::Stopping => return Err(self.busy()),
        }
        self.set_state(State::Starting);
        match self.launch().await {
            Ok((run, kvm)) => {
                self.run = Some(run);
                self.accelerated = kvm;
                self.set_state(State::Running);
                tracing::info!(vm_id = %self.id(), vm_name = %self.name(), pid = self.run.as_ref().map_or(0, |r| r.process.pid()), kvm, "VM started");
                Ok(())
            }
            Err(e) => {
                self.clean_runtime();
                self.set_state(State::Stopped);
                tracing::warn!(vm_id = %self.id(), vm_name = %self.name(), "start failed: {e}");
                Err(e)
            }
        }
    }

    fn busy(&self) -> Error {
        Error::InvalidState(format!(
            "VM '{}' is {}; try again once that is done",
            self.name(),
            self.state
        ))
    }

    /// Everything Start does; on error the caller cleans up and nothing is left running.
    async fn launch(&mut self) -> Result<(Running, bool)> {
        let s = self.record.settings.clone();
        // Files may have gone since they were set.
        settings::resolve_qemu_path(&s.qemu_path)?;
        for (key, path) in [
            ("HdaDiskImage", &s.hda_disk_image),
            ("HdbDiskImage", &s.hdb_disk_image),
            ("KernelImage", &s.kernel_image),
            ("Initrd", &s.initrd),
        ] {
            settings::check_file(key, path)?;
        }
        let kvm = self.use_kvm()?;
        let caps = self.ctx.binaries.probe(&s.qemu_path).await?;
        let vm_dir = self.vm_dir();
        disks::prepare(&vm_dir, &s).await?;
        let cmd = self.launch_plan(kvm)?;

        let rt = self.runtime_dir();
        let internal = |what: &str, e: std::io::Error| Error::Internal(format!("{what}: {e}"));
        std::fs::create_dir_all(&rt)
            .map_err(|e| internal(&format!("cannot create {}", rt.display()), e))?;
        let qmp_path = rt.join(adopt::QMP_SOCKET);
        let _ = std::fs::remove_file(&qmp_path);
        let listener = std::os::unix::net::UnixListener::bind(&qmp_path)
            .map_err(|e| internal(&format!("cannot bind {}", qmp_path.display()), e))?;
        let log_path = vm_dir.join("qemu.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| internal(&format!("cannot create {}", log_path.display()), e))?;

        tracing::info!(vm_id = %self.id(), vm_name = %self.name(), command = %cmd.join(" "), "starting QEMU");
        let listener_fd = OwnedFd::from(listener);
        let mut process = Process::spawn(&cmd, &vm_dir, log, &listener_fd)
            .map_err(|e| Error::StartFailed(format!("cannot run {}: {e}", s.qemu_path)))?;
        drop(listener_fd);

        let (events_tx, events) = mpsc::unbounded_channel();
        let connect = async {
            let stream = UnixStream::connect(&qmp_path)
                .await
                .map_err(super::qmp::Error::Io)?;
            Qmp::handshake(stream, events_tx, QMP_TIMEOUT).await
        };
        let qmp = tokio::select! {
            qmp = connect => qmp,
            exit = process.exited() => return Err(self.did_not_start(exit)),
        };
        let qmp = match qmp {
            Ok(qmp) => qmp,
            Err(e) => {
                // QEMU usually closes the socket because it is exiting on a bad argument:
                // give it a moment to say so, which is the message that helps.
                if let Ok(exit) = timeout(Duration::from_secs(1), process.exited()).await {
                    return Err(self.did_not_start(exit));
                }
                process.signal(Signal::SIGKILL).ok();
                process.exited().await;
                return Err(Error::StartFailed(format!(
                    "QEMU of VM '{}' did not answer on QMP: {e}. {}",
                    self.name(),
                    self.log_tail()
                )));
            }
        };
        let mut run = Running {
            process,
            qmp,
            caps,
            events,
            shutdown: None,
            throttled: false,
        };
        match self.prepare_guest(&mut run).await {
            Ok(()) => Ok((run, kvm)),
            Err(e) => {
                run.process.signal(Signal::SIGKILL).ok();
                run.process.exited().await;
                self.release(&run).await;
                Err(e)
            }
        }
    }

    fn did_not_start(&self, exit: Exit) -> Error {
        Error::StartFailed(format!(
            "QEMU did not start VM '{}': {}. {}",
            self.name(),
            exit.describe(),
            self.log_tail()
        ))
    }

    /// While QEMU is still paused (-S): tunnels attached, links down where there is none,
    /// then go. Attaching over QMP here is the same path as attaching to a running VM.
    async fn prepare_guest(&mut self, run: &mut Running) -> Result<()> {
        let legacy = self.record.settings.legacy_networking;
        for n in 0..self.record.settings.adapters {
            match self.record.tunnels.iter().find(|t| t.adapter == n) {
                Some(t) => run
                    .plug(t, legacy, self.ctx.udp_host)
                    .await
                    .map_err(|e| {
                        Error::StartFailed(format!(
                            "cannot attach the UDP tunnel of adapter {n} of VM '{}' (local port {}, to {}:{}): {e}",
                            self.name(),
                            t.local_port,
                            t.remote_host,
                            t.remote_port
                        ))
                    })?,
                // A hub whose only port is the NIC stalls the NIC for good; a down link is
                // also what the guest should see without a cable.
                None => run.set_link(n, false).await?,
            }
        }
        let s = &self.record.settings;
        run.limit(&self.ctx.privilege, &s.name, None, s).await?;
        run.qmp.execute("cont", None, QMP_TIMEOUT).await?;
        Ok(())
    }

    async fn stop(&mut self) -> Result<()> {
        match self.state {
            State::Stopped => return Ok(()),
            State::Starting | State::Stopping => return Err(self.busy()),
            State::Running | State::Paused => {}
        }
        self.set_state(State::Stopping);
        let name = self.record.settings.name.clone();
        let Some(run) = self.run.as_mut() else {
            self.set_state(State::Stopped);
            return Ok(());
        };
        let quit = run.qmp.execute("quit", None, STOP_GRACE).await;
        if let Err(e) = quit {
            tracing::info!(vm_id = %self.record.id, "QMP quit failed ({e}); sending SIGTERM");
        }
        let mut exit = timeout(STOP_GRACE, run.process.exited()).await.ok();
        for sig in [Signal::SIGTERM, Signal::SIGKILL] {
            if exit.is_some() {
                break;
            }
            tracing::warn!(vm_id = %self.record.id, signal = %sig, "QEMU did not exit in time");
            if let Err(e) = run.process.signal(sig) {
                tracing::warn!(vm_id = %self.record.id, "cannot send {sig}: {e}");
            }
            exit = timeout(STOP_GRACE, run.process.exited()).await.ok();
        }
        match exit {
            Some(exit) => {
                self.exited(exit, true).await;
                Ok(())
            }
            None => Err(Error::Timeout(format!(
                "QEMU of VM '{name}' (pid {}) did not die even after SIGKILL",
                run.process.pid()
            ))),
        }
    }

    /// QEMU has exited: what limited it goes.
    async fn release(&self, run: &Running) {
        if !run.throttled {
            return;
        }
        let pid = run.process.pid();
        if let Err(e) = self.ctx.privilege.release(pid).await {
            tracing::warn!(vm_id = %self.id(), pid, "cannot remove the CPU limit of an exited QEMU: {e}");
        }
    }

    /// QEMU is gone: record why, unless a client asked for it.
    async fn exited(&mut self, exit: Exit, requested: bool) {
        let run = self.run.take();
        if let Some(run) = &run {
            self.release(run).await;
        }
        let shutdown = run.and_then(|r| r.shutdown);
        self.accelerated = false;
        self.clean_runtime();
        let mut record = self.record.clone();
        record.exit_status = exit.status();
        record.last_error = if requested {
            String::new()
        } else if shutdown.as_deref() == Some("guest-shutdown") {
            format!("the guest powered itself off ({})", exit.describe())
        } else {
            let tail = self.log_tail();
            format!("{}. {tail}", exit.describe())
        };
        if !requested {
            tracing::warn!(vm_id = %self.id(), vm_name = %self.name(), exit_status = record.exit_status, "VM stopped on its own: {}", record.last_error);
        }
        if let Err(e) = self.save(record.clone()).await {
            tracing::error!(vm_id = %self.id(), "cannot record why the VM stopped: {e}");
        }
        self.record = record;
        self.set_state(State::Stopped);
    }

    fn event(&mut self, event: Event) {
        tracing::debug!(vm_id = %self.id(), event = %event.name, data = %event.data, "QMP event");
        match event.name.as_str() {
            "STOP" if self.state == State::Running => self.set_state(State::Paused),
            "RESUME" if self.state == State::Paused => self.set_state(State::Running),
            "SHUTDOWN" => {
                if let Some(run) = self.run.as_mut() {
                    run.shutdown = event.data["reason"].as_str().map(str::to_string);
                }
            }
            _ => {}
        }
    }

    async fn qmp(&mut self, command: &str) -> Result<()> {
        let run = self
            .run
            .as_mut()
            .ok_or_else(|| Error::InvalidState("QEMU is not running".into()))?;
        run.qmp.execute(command, None, QMP_TIMEOUT).await?;
        Ok(())
    }

    async fn suspend(&mut self) -> Result<()> {
        match self.state {
            State::Paused => Ok(()),
            State::Running => {
                self.qmp("stop").await?;
                self.set_state(State::Paused);
                Ok(())
            }
            _ => Err(self.not_running("suspend")),
        }
    }

    async fn resume(&mut self) -> Result<()> {
        match self.state {
            State::Running => Ok(()),
            State::Paused => {
                self.qmp("cont").await?;
                self.set_state(State::Running);
                Ok(())
            }
            _ => Err(self.not_running("resume")),
        }
    }

    async fn reload(&mut self) -> Result<()> {
        match self.state {
            State::Running | State::Paused => self.qmp("system_reset").await,
            _ => Err(self.not_running("reload")),
        }
    }

    async fn delete(&mut self) -> Result<()> {
        if matches!(self.state, State::Starting | State::Stopping) {
            return Err(self.busy());
        }
        let store = self.ctx.store.clone();
        let id = self.id().to_string();
        tokio::task::spawn_blocking(move || store.delete(&id))
            .await
            .map_err(|e| Error::Internal(format!("the delete task failed: {e}")))??;
        // The VM is gone from here on, whatever happens next: a daemon killed now finds its
        // QEMU in a runtime dir of no VM, and ends it there (`adopt::end_orphans`). Its disks
        // are gone too, so there is nothing for a gentle quit to save.
        if let Some(mut run) = self.run.take() {
            let _ = run.process.signal(Signal::SIGKILL);
            if timeout(STOP_GRACE, run.process.exited()).await.is_err() {
                tracing::error!(vm_id = %self.id(), pid = run.process.pid(), "the QEMU of a deleted VM does not die");
            }
            self.release(&run).await;
        }
        self.clean_runtime();
        let s = &self.record.settings;
        let mut ports = self.ctx.ports(Pool::Console);
        for port in [s.console_port, s.monitor_port] {
            if port != 0 {
                ports.release(port);
            }
        }
        drop(ports);
        let mut ports = self.ctx.ports(Pool::Udp);
        for t in &self.record.tunnels {
            ports.release(t.local_port);
        }
        drop(ports);
        let mut names = lock(&self.ctx.names);
        names.remove(&s.name);
        // A lab of a thousand VMs deleted should not leave a table for a thousand behind.
        if names.len() * 4 < names.capacity() {
            names.shrink_to_fit();
        }
        drop(names);
        tracing::info!(vm_id = %self.id(), vm_name = %self.name(), "VM deleted");
        Ok(())
    }

    // ---- tunnels ----

    async fn add_tunnel(&mut self, t: Tunnel) -> Result<()> {
        t.check(self.name(), self.record.settings.adapters)?;
        // The remote must resolve now, for the backend this VM uses, even while stopped.
        let caps = match &self.run {
            Some(run) => run.caps.clone(),
            None => {
                self.ctx
                    .binaries
                    .probe(&self.record.settings.qemu_path)
                    .await?
            }
        };
        let backend = Backend::choose(self.record.settings.legacy_networking, &caps);
        tunnel::resolve(&t, backend, self.ctx.udp_host).await?;
        self.set_tunnel(t.adapter, Some(t)).await
    }

    async fn remove_tunnel(&mut self, adapter: u32) -> Result<()> {
        tunnel::check_adapter(self.name(), adapter, self.record.settings.adapters)?;
        self.set_tunnel(adapter, None).await
    }

    /// Puts `new` (or no tunnel) on `adapter`: live first if QEMU runs, then on disk; if
    /// either fails, the VM keeps the tunnel it had and nothing is left reserved.
    async fn set_tunnel(&mut self, adapter: u32, new: Option<Tunnel>) -> Result<()> {
        if matches!(self.state, State::Starting | State::Stopping) {
            return Err(self.busy());
        }
        let old = self
            .record
            .tunnels
            .iter()
            .find(|t| t.adapter == adapter)
            .cloned();
        if old == new {
            return Ok(());
        }
        let old_port = old.as_ref().map(|t| t.local_port);
        let new_port = new.as_ref().map(|t| t.local_port);
        let mut claims = Claims::default();
        if let Some(port) = new_port.filter(|p| Some(*p) != old_port) {
            claims.reserve(&self.ctx, Pool::Udp, port, self.id())?;
        }
        let (legacy, udp_host) = (self.record.settings.legacy_networking, self.ctx.udp_host);
        let _mark = match self.mark_live(Pending::Tunnel(adapter), true) {
            Ok(mark) => mark,
            Err(e) => {
                claims.undo(&self.ctx);
                return Err(e);
            }
        };
        if let Some(run) = self.run.as_mut() {
            let rewired = run
                .rewire(adapter, old.as_ref(), new.as_ref(), legacy, udp_host)
                .await;
            if let Err(e) = rewired {
                claims.undo(&self.ctx);
                return Err(e);
            }
        }
        let mut record = self.record.clone();
        record.tunnels.retain(|t| t.adapter != adapter);
        record.tunnels.extend(new.clone());
        record.tunnels.sort_by_key(|t| t.adapter);
        if let Err(e) = self.save(record.clone()).await {
            if let Some(run) = self.run.as_mut() {
                let back = run
                    .rewire(adapter, new.as_ref(), old.as_ref(), legacy, udp_host)
                    .await;
                if let Err(e) = back {
                    tracing::error!(vm_id = %self.record.id, adapter, "cannot put the previous tunnel back: {e}");
                }
            }
            claims.undo(&self.ctx);
            return Err(e);
        }
        if let Some(port) = old_port.filter(|p| Some(*p) != new_port) {
            self.ctx.ports(Pool::Udp).release(port);
        }
        self.record = record;
        match &new {
            Some(t) => {
                tracing::info!(vm_id = %self.id(), vm_name = %self.name(), adapter, local_port = t.local_port, remote = %format!("{}:{}", t.remote_host, t.remote_port), live = self.run.is_some(), "UDP tunnel set")
            }
            None => {
                tracing::info!(vm_id = %self.id(), vm_name = %self.name(), adapter, live = self.run.is_some(), "UDP tunnel removed")
            }
        }
        self.publish();
        Ok(())
    }

    // ---- files ----

    fn clean_runtime(&self) {
        let _ = std::fs::remove_dir_all(self.runtime_dir());
    }

    /// Marks `what` as changing on the running QEMU until the change is saved or undone
    /// (see [`Pending`]); nothing to mark if QEMU does not run or `what` does not change.
    fn mark_live(&self, what: Pending, changes: bool) -> Result<Option<adopt::Mark>> {
        if self.run.is_none() || !changes {
            return Ok(None);
        }
        let rt = self.runtime_dir();
        what.mark(&rt).map(Some).map_err(|e| {
            Error::Internal(format!(
                "cannot write in the runtime dir {}: {e}",
                rt.display()
            ))
        })
    }

    fn read_log(&self) -> Result<String> {
        use std::io::{Read, Seek, SeekFrom};
        let path = self.vm_dir().join("qemu.log");
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
            Err(e) => {
                return Err(Error::Internal(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let mut bytes = Vec::new();
        f.seek(SeekFrom::Start(len.saturating_sub(MAX_LOG)))
            .and_then(|_| f.read_to_end(&mut bytes))
            .map_err(|e| Error::Internal(format!("cannot read {}: {e}", path.display())))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The last lines of qemu.log, for error messages.
    fn log_tail(&self) -> String {
        let log = self.read_log().unwrap_or_default();
        // QEMU warns at every start that an adapter's hub has no tunnel yet: that is the
        // design (the link is down instead), not a reason for anything.
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.contains("is not connected to host network"))
            .collect();
        if lines.is_empty() {
            return "qemu.log is empty".into();
        }
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        format!("qemu.log ends with:\n{tail}")
    }
}
