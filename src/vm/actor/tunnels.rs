//! Adding and removing a VM's UDP tunnels: live first on a running QEMU, then on disk; if
//! either fails, the VM keeps the tunnel it had.

use super::Actor;
use crate::vm::claims::Claims;
use crate::vm::error::{Error, Result};
use crate::vm::runtime::{LiveChange, Mark};
use crate::vm::state::Op;
use crate::vm::tunnel::{self, Backend};
use crate::vm::{Pool, Tunnel};

impl Actor {
    pub(super) async fn add_tunnel(&mut self, t: Tunnel) -> Result<()> {
        t.check(self.name(), self.record.settings.adapters)?;
        // The remote must resolve now, for the backend this VM uses, even while stopped.
        let caps = match &self.qemu {
            Some(qemu) => qemu.caps.clone(),
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

    pub(super) async fn remove_tunnel(&mut self, adapter: u32) -> Result<()> {
        tunnel::check_adapter(self.name(), adapter, self.record.settings.adapters)?;
        self.set_tunnel(adapter, None).await
    }

    /// Puts `new` (or no tunnel) on `adapter`: live first if QEMU runs, then on disk; if
    /// either fails, the VM keeps the tunnel it had and nothing is left reserved.
    async fn set_tunnel(&mut self, adapter: u32, new: Option<Tunnel>) -> Result<()> {
        if self.admit(Op::Rewire)?.is_none() {
            return Ok(());
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
        let mut claims = Claims::new(&self.ctx);
        if let Some(port) = new_port.filter(|p| Some(*p) != old_port) {
            claims.reserve(Pool::Udp, port, self.id())?;
        }
        let (legacy, udp_host) = (self.record.settings.legacy_networking, self.ctx.udp_host);
        let _mark = self.mark_live(LiveChange::Tunnel(adapter), true)?;
        if let Some(qemu) = self.qemu.as_mut() {
            qemu.rewire(adapter, old.as_ref(), new.as_ref(), legacy, udp_host)
                .await?;
        }
        let mut record = self.record.clone();
        record.tunnels.retain(|t| t.adapter != adapter);
        record.tunnels.extend(new.clone());
        record.tunnels.sort_by_key(|t| t.adapter);
        if let Err(e) = self.save(record.clone()).await {
            if let Some(qemu) = self.qemu.as_mut() {
                let back = qemu
                    .rewire(adapter, new.as_ref(), old.as_ref(), legacy, udp_host)
                    .await;
                if let Err(e) = back {
                    tracing::error!(vm_id = %self.record.id, adapter, "cannot put the previous tunnel back: {e}");
                }
            }
            return Err(e);
        }
        claims.commit();
        if let Some(port) = old_port.filter(|p| Some(*p) != new_port) {
            self.ctx.ports(Pool::Udp).release(port);
        }
        self.record = record;
        match &new {
            Some(t) => {
                tracing::info!(vm_id = %self.id(), vm_name = %self.name(), adapter, local_port = t.local_port, remote = %format!("{}:{}", t.remote_host, t.remote_port), live = self.qemu.is_some(), "UDP tunnel set")
            }
            None => {
                tracing::info!(vm_id = %self.id(), vm_name = %self.name(), adapter, live = self.qemu.is_some(), "UDP tunnel removed")
            }
        }
        self.publish();
        Ok(())
    }

    /// Marks `what` as changing on the running QEMU until the change is saved or undone
    /// (see [`LiveChange`]); nothing to mark if QEMU does not run or `what` does not change.
    pub(super) fn mark_live(&self, what: LiveChange, changes: bool) -> Result<Option<Mark>> {
        if self.qemu.is_none() || !changes {
            return Ok(None);
        }
        self.runtime.mark(what).map(Some).map_err(Error::Internal)
    }
}
