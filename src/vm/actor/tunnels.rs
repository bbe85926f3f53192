//! Adding and removing a VM's UDP tunnels: live first on a running QEMU, then on disk; if
//! either fails, the VM keeps the tunnel it had.
//!
//! The daemon holds a socket on every tunnel's local port (`ports/held.rs`): taken when the
//! tunnel is added (or when a client allocated the port), deaf while the VM is stopped,
//! lent to QEMU while it runs, and closed when the tunnel is removed or the VM deleted.

use std::net::SocketAddr;

use super::Actor;
use crate::ports::{Error as PortError, Holder, Ports};
use crate::vm::claims::Claims;
use crate::vm::error::{Error, Result};
use crate::vm::qemu::Wiring;
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
        let legacy = self.record.settings.legacy_networking;
        let backend = Backend::allowed(self.name(), legacy, &caps, self.ctx.allow_unsafe_tunnels)?;
        let ep = tunnel::resolve(&t, backend, self.ctx.udp_host).await?;
        self.set_tunnel(t.adapter, Some((t, ep.local))).await
    }

    pub(super) async fn remove_tunnel(&mut self, adapter: u32) -> Result<()> {
        tunnel::check_adapter(self.name(), adapter, self.record.settings.adapters)?;
        self.set_tunnel(adapter, None).await
    }

    /// Suspends adapter `adapter`'s cable (nothing passes, the guest keeps its carrier) or
    /// lets it pass again: live first if QEMU runs, then on disk.
    pub(super) async fn set_link_suspended(&mut self, adapter: u32, suspended: bool) -> Result<()> {
        tunnel::check_adapter(self.name(), adapter, self.record.settings.adapters)?;
        let Some(i) = self
            .record
            .tunnels
            .iter()
            .position(|t| t.adapter == adapter)
        else {
            return Err(Error::InvalidArgument(format!(
                "adapter {adapter} of VM '{}' has no tunnel, so no link to suspend or resume; \
                 wire it first (AddUdpTunnel, or Manager.Connect)",
                self.name()
            )));
        };
        if self.admit(Op::Rewire)?.is_none() || self.record.tunnels[i].suspended == suspended {
            return Ok(());
        }
        let mut record = self.record.clone();
        record.tunnels[i].suspended = suspended;
        let _mark = self.mark_live(LiveChange::Tunnel(adapter), true)?;
        if let Some(qemu) = self.qemu.as_mut() {
            qemu.suspend_link(adapter, suspended).await?;
        }
        if let Err(e) = self.save(record.clone()).await {
            if let Some(qemu) = self.qemu.as_mut() {
                if let Err(e) = qemu.suspend_link(adapter, !suspended).await {
                    tracing::error!(vm_id = %self.record.id, adapter, "cannot put the link's previous state back: {e}");
                }
            }
            return Err(e);
        }
        self.record = record;
        tracing::info!(vm_id = %self.id(), vm_name = %self.name(), adapter, suspended, live = self.qemu.is_some(), "link suspended or resumed");
        self.publish();
        Ok(())
    }

    /// Puts `new` (or no tunnel) on `adapter`: live first if QEMU runs, then on disk; if
    /// either fails, the VM keeps the tunnel it had and nothing is left reserved. `new`
    /// comes with its local end as it resolved now, where the port's socket is bound.
    async fn set_tunnel(&mut self, adapter: u32, new: Option<(Tunnel, SocketAddr)>) -> Result<()> {
        let (new, local) = new.unzip();
        if self.admit(Op::Rewire)?.is_none() {
            return Ok(());
        }
        let old = self
            .record
            .tunnels
            .iter()
            .find(|t| t.adapter == adapter)
            .cloned();
        let same = |a: Option<&Tunnel>, b: Option<&Tunnel>| match (a, b) {
            (Some(a), Some(b)) => a.same_ends(b),
            (a, b) => a.is_none() && b.is_none(),
        };
        if same(old.as_ref(), new.as_ref()) {
            return Ok(());
        }
        let old_port = old.as_ref().map(|t| t.local_port);
        let new_port = new.as_ref().map(|t| t.local_port);
        let mut claims = Claims::new(&self.ctx);
        if let Some(port) = new_port.filter(|p| Some(*p) != old_port) {
            claims.reserve(Pool::Udp, port, self.id())?;
        }
        let ctx = self.ctx.clone();
        let wiring = Wiring::of(&self.record.settings, &ctx);
        let _mark = self.mark_live(LiveChange::Tunnel(adapter), true)?;
        match self.qemu.as_mut() {
            Some(qemu) => {
                qemu.rewire(adapter, old.as_ref(), new.as_ref(), &wiring)
                    .await?
            }
            // Stopped: the port is held where this tunnel will bind it (its family), so
            // nobody can take it before Start.
            None => {
                if let (Some(port), Some(at)) = (new_port, local) {
                    ctx.ports(Pool::Udp).bind_at(port, at)?;
                }
            }
        }
        let mut record = self.record.clone();
        record.tunnels.retain(|t| t.adapter != adapter);
        record.tunnels.extend(new.clone());
        record.tunnels.sort_by_key(|t| t.adapter);
        if let Err(e) = self.save(record.clone()).await {
            if let Some(qemu) = self.qemu.as_mut() {
                let back = qemu
                    .rewire(adapter, new.as_ref(), old.as_ref(), &wiring)
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

    /// QEMU no longer has the tunnels' sockets (it exited, or a Start failed): the daemon's
    /// copies go deaf and unconnected, and a port a QEMU had alone (one a previous daemon
    /// handed it, or the socket netdev's own) is bound again at once.
    pub(super) fn park_tunnels(&self) {
        self.each_tunnel_port(|ports, t| ports.park(t.local_port));
    }

    /// For a VM found stopped when the daemon starts: no daemon held its tunnels' ports
    /// meanwhile, so they are bound again now, where the tunnels will most likely want them.
    pub(super) fn hold_tunnels(&self) {
        let udp_host = self.ctx.udp_host;
        self.each_tunnel_port(|ports, t| {
            ports.bind_at(t.local_port, tunnel::likely_local(t, udp_host))
        });
    }

    fn each_tunnel_port(&self, f: impl Fn(&mut Ports, &Tunnel) -> Result<(), PortError>) {
        let mine = Holder::Vm(self.id().to_string());
        let mut ports = self.ctx.ports(Pool::Udp);
        for t in &self.record.tunnels {
            if ports.holder(t.local_port) != Some(&mine) {
                continue;
            }
            if let Err(e) = f(&mut ports, t) {
                // Start says so again (PortUnavailable) until the port is free.
                tracing::warn!(vm_id = %self.id(), adapter = t.adapter, port = t.local_port, "the daemon does not hold the port of a stopped VM's tunnel: {e}");
            }
        }
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
