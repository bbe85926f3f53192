//! Taking back the QEMU a previous daemon left running, and what it was changing live.

use nix::sys::signal::Signal;
use std::sync::Arc;

use super::Actor;
use crate::model::Priority;
use crate::vm::adopt;
use crate::vm::process::Exit;
use crate::vm::qemu::{Qemu, Wiring, QMP_TIMEOUT};
use crate::vm::runtime::LiveChange;
use crate::vm::tpm::{self, Swtpm};
use crate::vm::State;

impl Actor {
    /// Takes back the QEMU a previous daemon left running, or records that it died.
    pub(super) async fn readopt(&mut self) {
        let found = match adopt::find(&self.runtime, QMP_TIMEOUT).await {
            Ok(None) => {
                self.finish_left_captures().await;
                return self.runtime.clean();
            }
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
        let mut qemu = Qemu {
            process: found.process,
            qmp: found.qmp,
            caps,
            events: found.events,
            clock: found.clock,
            shutdown: None,
            throttled: self.record.settings.cpu_throttling > 0 || self.ctx.privilege.places(),
            console: None,
            tpm: Swtpm::find(&self.runtime.tpm_pidfile()),
        };
        if self.record.settings.tpm && qemu.tpm.is_none() {
            tracing::warn!(vm_id = %self.id(), "the swtpm of the VM's running QEMU is not there: its TPM is gone until the VM restarts");
        }
        let status = qemu.qmp.execute("query-status", None, QMP_TIMEOUT).await;
        let kvm = qemu.qmp.execute("query-kvm", None, QMP_TIMEOUT).await;
        let state = match status.as_ref().map(|s| s["status"].as_str()) {
            Ok(Some("running")) => State::Running,
            // Still in -S: the previous daemon died inside Start, and a Start happens whole
            // or not at all.
            Ok(Some("prelaunch")) | Err(_) => {
                let why = match &status {
                    Ok(_) => "gns3-qemud stopped while it started the VM".to_string(),
                    Err(e) => format!("its QEMU did not answer query-status ({e})"),
                };
                let _ = qemu.process.signal(Signal::SIGKILL);
                qemu.process.exited().await;
                self.release(&qemu).await;
                return self.lost(format!("{why}, so its QEMU was killed")).await;
            }
            Ok(_) => State::Paused,
        };
        self.accelerated = kvm.is_ok_and(|k| k["enabled"].as_bool() == Some(true));
        self.finish_pending(&mut qemu).await;
        self.readopt_captures(&mut qemu, state).await;
        self.reattach_console(&mut qemu).await;
        tracing::info!(vm_id = %self.id(), vm_name = %self.name(), pid = qemu.process.pid(), %state, "found its QEMU running again");
        self.qemu = Some(qemu);
        self.state = state;
        self.left_stop = self.runtime.stop_under_way();
        self.publish();
    }

    /// Puts the record's version on what the previous daemon was changing live when it
    /// died: the change either reached the record, and is made whole, or did not, and is
    /// undone.
    async fn finish_pending(&mut self, qemu: &mut Qemu) {
        for what in self.runtime.left() {
            let s = &self.record.settings;
            let done = match what {
                LiveChange::Tunnel(n) => {
                    let t = self.record.tunnels.iter().find(|t| t.adapter == n);
                    // The port QEMU had is closed with its netdev; the record's tunnel gets
                    // a socket the daemon binds and holds from now on.
                    let wiring = Wiring::of(s, &self.ctx);
                    qemu.swap(n, t, &wiring).await
                }
                // Whether QEMU took the new media is unknown: the record's goes in again.
                LiveChange::Media => qemu.set_media(&s.cdrom_image).await,
                LiveChange::Limits => {
                    // What QEMU has is unknown: compared with settings that differ in both
                    // limits, both are set (a renice is still skipped where every thread
                    // has the value already).
                    qemu.throttled = true;
                    let mut unknown = s.clone();
                    unknown.cpu_throttling = s.cpu_throttling.wrapping_add(1);
                    if let Some(other) = Priority::ALL
                        .iter()
                        .copied()
                        .find(|p| *p != s.process_priority)
                    {
                        unknown.process_priority = other;
                    }
                    qemu.limit(&self.ctx.privilege, &s.name, Some(&unknown), s)
                        .await
                }
                // A guest lets go of a vCPU only if it cooperates, so a change the
                // record missed is made whole rather than undone: the record takes the
                // vCPUs QEMU has, and QEMU gets those the record has.
                LiveChange::Cpus => self.settle_cpus(qemu).await,
            };
            match done {
                Ok(()) => {
                    tracing::info!(vm_id = %self.id(), ?what, "finished a change the previous daemon made live")
                }
                Err(e) => {
                    tracing::error!(vm_id = %self.id(), ?what, "cannot bring a change the previous daemon made live in line with the record: {e}")
                }
            }
            self.runtime.clear(what);
        }
    }

    /// The record's Cpus and the running QEMU's vCPUs made the same, the higher winning.
    async fn settle_cpus(&mut self, qemu: &mut Qemu) -> crate::vm::error::Result<()> {
        let present = qemu.present_cpus().await?;
        let s = &self.record.settings;
        if present <= s.cpus {
            return qemu.plug_cpus(&s.name, s.cpus).await;
        }
        let mut record = self.record.clone();
        record.settings.cpus = present.min(s.max_cpus);
        self.save(record.clone()).await?;
        self.record = record;
        Ok(())
    }

    /// The console and listeners a previous daemon served die with it: they are made
    /// again. A port another program took meanwhile is lost until the VM restarts, but the
    /// VM is not (OpenConsole still works).
    async fn reattach_console(&mut self, qemu: &mut Qemu) {
        let listeners = self.bind_listeners().unwrap_or_else(|e| {
            tracing::error!(vm_id = %self.id(), "the console of an adopted QEMU has no TCP port: {e}");
            Default::default()
        });
        if let Err(e) = self.attach_console(qemu, listeners).await {
            tracing::error!(vm_id = %self.id(), "no console for an adopted QEMU: {e}");
        }
    }

    /// The VM's QEMU did not survive the daemon's absence: the VM is stopped, and says why.
    async fn lost(&mut self, why: String) {
        tracing::warn!(vm_id = %self.id(), vm_name = %self.name(), "{why}");
        tpm::end_strays(&self.runtime.tpm_pidfile()).await;
        self.finish_left_captures().await;
        self.runtime.clean();
        let mut record = self.record.clone();
        record.exit_status = Exit::Unknown.status();
        record.last_error = why;
        if let Err(e) = self.save(record.clone()).await {
            tracing::error!(vm_id = %self.id(), "cannot record why the VM stopped: {e}");
        }
        self.record = record;
        self.publish();
    }
}
