//! Start, Stop, Suspend, Resume, Reload and Delete, and what happens when QEMU exits or
//! reports a change of its own. Each runs only in a state `state::verdict` allows.

use nix::sys::signal::Signal;
use std::time::Duration;
use tokio::time::timeout;

use super::shutdown::Ending;
use super::Actor;
use crate::model::OnStop;
use crate::vm::error::{Error, Result};
use crate::vm::process::Exit;
use crate::vm::qemu::{Qemu, QMP_TIMEOUT};
use crate::vm::qmp::Event;
use crate::vm::{lock, Pool, State};

/// How long QEMU gets to exit after `quit`, then after SIGTERM, before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

impl Actor {
    pub(super) async fn start(&mut self) -> Result<()> {
        self.set_state(State::Starting);
        let mut tpm = None;
        match self.launch(&mut tpm).await {
            Ok((mut qemu, kvm)) => {
                qemu.tpm = tpm;
                self.qemu = Some(qemu);
                self.accelerated = kvm;
                self.set_state(State::Running);
                tracing::info!(vm_id = %self.id(), vm_name = %self.name(), pid = self.qemu.as_ref().map_or(0, |r| r.process.pid()), kvm, "VM started");
                Ok(())
            }
            Err(e) => {
                if let Some(tpm) = tpm {
                    tpm.end().await;
                }
                self.runtime.clean();
                self.park_tunnels();
                self.after_failed_load(&e).await;
                self.set_state(State::Stopped);
                tracing::warn!(vm_id = %self.id(), vm_name = %self.name(), "start failed: {e}");
                Err(e)
            }
        }
    }

    /// Stop as OnStop says, returning once the VM is stopped.
    pub(super) async fn stop(&mut self) -> Result<()> {
        match self.record.settings.on_stop {
            // A shutdown begins in `stop_command`, which answers its Stop when it ends.
            OnStop::PowerOff | OnStop::Shutdown => self.power_off().await,
            OnStop::SaveState => self.save_and_stop().await,
        }
    }

    /// PowerOff: at once, ending a shutdown under way.
    pub(super) async fn power_off(&mut self) -> Result<()> {
        let result = self.pull_cord(Ending::Asked).await;
        self.answer_shutdown(&result);
        result
    }

    /// The power cord pulled: QMP quit, then SIGTERM, then SIGKILL.
    pub(super) async fn pull_cord(&mut self, ending: Ending) -> Result<()> {
        self.set_state(State::Stopping);
        let name = self.record.settings.name.clone();
        let Some(qemu) = self.qemu.as_mut() else {
            self.set_state(State::Stopped);
            return Ok(());
        };
        let quit = qemu.qmp.execute("quit", None, STOP_GRACE).await;
        if let Err(e) = quit {
            tracing::info!(vm_id = %self.record.id, "QMP quit failed ({e}); sending SIGTERM");
        }
        let mut exit = timeout(STOP_GRACE, qemu.process.exited()).await.ok();
        for sig in [Signal::SIGTERM, Signal::SIGKILL] {
            if exit.is_some() {
                break;
            }
            tracing::warn!(vm_id = %self.record.id, signal = %sig, "QEMU did not exit in time");
            if let Err(e) = qemu.process.signal(sig) {
                tracing::warn!(vm_id = %self.record.id, "cannot send {sig}: {e}");
            }
            exit = timeout(STOP_GRACE, qemu.process.exited()).await.ok();
        }
        match exit {
            Some(exit) => {
                self.exited(exit, ending).await;
                Ok(())
            }
            None => Err(Error::Timeout(format!(
                "QEMU of VM '{name}' (pid {}) did not die even after SIGKILL",
                qemu.process.pid()
            ))),
        }
    }

    /// QEMU has exited: what limited it goes.
    pub(super) async fn release(&self, qemu: &Qemu) {
        if !qemu.throttled {
            return;
        }
        let pid = qemu.process.pid();
        if let Err(e) = self.ctx.privilege.release(pid).await {
            tracing::warn!(vm_id = %self.id(), pid, "cannot remove the CPU limit of an exited QEMU: {e}");
        }
    }

    /// QEMU is gone: record why, unless a client asked for it.
    pub(super) async fn exited(&mut self, exit: Exit, ending: Ending) {
        let mut qemu = self.qemu.take();
        if let Some(qemu) = &mut qemu {
            self.release(qemu).await;
            if let Some(tpm) = qemu.tpm.take() {
                tpm.end().await;
            }
        }
        if let Some(qemu) = &qemu {
            let timeline = qemu.clock.timeline();
            self.end_captures(&timeline).await;
        }
        let shutdown = qemu.and_then(|q| q.shutdown);
        self.accelerated = false;
        self.runtime.clean();
        self.park_tunnels();
        let mut record = self.record.clone();
        record.exit_status = exit.status();
        let requested = !matches!(ending, Ending::Unasked);
        record.last_error = match ending {
            Ending::Asked => String::new(),
            Ending::Forced(why) => why,
            Ending::Unasked if shutdown.as_deref() == Some("guest-shutdown") => {
                format!("the guest powered itself off ({})", exit.describe())
            }
            Ending::Unasked => {
                let tail = self.log_tail();
                format!("{}. {tail}", exit.describe())
            }
        };
        if !requested {
            tracing::warn!(vm_id = %self.id(), vm_name = %self.name(), exit_status = record.exit_status, "VM stopped on its own: {}", record.last_error);
        }
        // A stop that changes neither the exit status nor the last error (one asked for, after
        // another) leaves the record as it was: no write, and no fsyncs, to make.
        if record != self.record {
            if let Err(e) = self.save(record.clone()).await {
                tracing::error!(vm_id = %self.id(), "cannot record why the VM stopped: {e}");
            }
        }
        self.record = record;
        self.set_state(State::Stopped);
    }

    pub(super) fn event(&mut self, event: Event) {
        tracing::debug!(vm_id = %self.id(), event = %event.name, data = %event.data, "QMP event");
        match event.name.as_str() {
            "STOP" if self.state == State::Running => self.set_state(State::Paused),
            "RESUME" if self.state == State::Paused => self.set_state(State::Running),
            "SHUTDOWN" => {
                if let Some(qemu) = self.qemu.as_mut() {
                    qemu.shutdown = event.data["reason"].as_str().map(str::to_string);
                }
            }
            _ => {}
        }
    }

    async fn qmp(&mut self, command: &str) -> Result<()> {
        let qemu = self.running()?;
        qemu.qmp.execute(command, None, QMP_TIMEOUT).await?;
        Ok(())
    }

    pub(super) async fn suspend(&mut self) -> Result<()> {
        self.qmp("stop").await?;
        self.set_state(State::Paused);
        Ok(())
    }

    pub(super) async fn resume(&mut self) -> Result<()> {
        self.qmp("cont").await?;
        self.set_state(State::Running);
        Ok(())
    }

    pub(super) async fn reload(&mut self) -> Result<()> {
        self.qmp("system_reset").await
    }

    pub(super) async fn delete(&mut self) -> Result<()> {
        let store = self.ctx.store.clone();
        let id = self.id().to_string();
        tokio::task::spawn_blocking(move || store.delete(&id))
            .await
            .map_err(|e| Error::Internal(format!("the delete task failed: {e}")))??;
        // The VM is gone from here on, whatever happens next: a daemon killed now finds its
        // QEMU in a runtime dir of no VM, and ends it there (`adopt::end_orphans`). Its disks
        // are gone too, so there is nothing for a gentle quit to save.
        if let Some(mut qemu) = self.qemu.take() {
            let _ = qemu.process.signal(Signal::SIGKILL);
            if timeout(STOP_GRACE, qemu.process.exited()).await.is_err() {
                tracing::error!(vm_id = %self.id(), pid = qemu.process.pid(), "the QEMU of a deleted VM does not die");
            }
            self.release(&qemu).await;
            if let Some(tpm) = qemu.tpm.take() {
                tpm.end().await;
            }
        }
        // Their files went with the VM's directory.
        self.captures.clear();
        self.runtime.clean();
        let s = &self.record.settings;
        let mut ports = self.ctx.ports(Pool::Console);
        for (_, port) in s.tcp_ports() {
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
        lock(&self.ctx.bases).release_all(self.id());
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
}
