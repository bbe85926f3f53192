//! A VM's QEMU while it runs: the process, its QMP connection, what its binary offers, and
//! the QMP commands the actor gives it (priority and CPU limit, links, tunnels).

use serde_json::json;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

use super::binary::Capabilities;
use super::capture::clock::Clock;
use super::error::{Error, Result};
use super::process::{Exit, Process};
use super::qmp::{self, Event, Qmp};
use super::tunnel::{self, Backend, Tunnel};
use super::{drives, network};
use super::{Context, Pool};
use crate::console::Console;
use crate::model::Settings;
use crate::privilege::Privilege;

/// How long a QMP command may take before the VM is deemed stuck.
pub const QMP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Qemu {
    pub process: Process,
    pub qmp: Qmp,
    /// What the running binary offers (QemuPath may change under it).
    pub caps: Arc<Capabilities>,
    pub events: mpsc::UnboundedReceiver<Event>,
    /// The timeline of its virtual clock, which its QMP reader keeps.
    pub clock: Arc<Clock>,
    /// The reason QEMU gave in its SHUTDOWN event, to tell a guest power-off from a crash.
    pub shutdown: Option<String>,
    /// A CPU limit or a cgroup was put on it, which must be released once it exits.
    pub throttled: bool,
    /// Its serial console, and the VM's listeners with it.
    pub console: Option<Arc<Console>>,
    /// The swtpm of a VM with Tpm, ended with QEMU.
    pub tpm: Option<super::tpm::Swtpm>,
}

/// What wiring a VM's tunnels takes: whose they are (for messages), its LegacyNetworking
/// and ReplicateLinkState, and the daemon's ports and settings.
pub struct Wiring<'a> {
    pub vm: &'a str,
    pub legacy: bool,
    pub replicate: bool,
    pub ctx: &'a Context,
}

impl<'a> Wiring<'a> {
    pub fn of(s: &'a Settings, ctx: &'a Context) -> Wiring<'a> {
        Wiring {
            vm: &s.name,
            legacy: s.legacy_networking,
            replicate: s.replicate_link_state,
            ctx,
        }
    }
}

/// What a running QEMU says between commands.
pub enum FromQemu {
    Exited(Exit),
    Event(Event),
}

impl Qemu {
    pub async fn next(&mut self) -> FromQemu {
        tokio::select! {
            exit = self.process.exited() => FromQemu::Exited(exit),
            Some(event) = self.events.recv() => FromQemu::Event(event),
        }
    }

    /// Puts `to`'s priority and CPU limit on QEMU, those that differ from `from` (all of
    /// them at start); if the limit fails, the priority goes back.
    pub async fn limit(
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
        let throttle = from.map_or(percent > 0 || privilege.places(), |f| {
            f.cpu_throttling != percent
        });
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
        self.throttled |= percent > 0 || privilege.places();
        Ok(())
    }

    /// Hands a VNC viewer's connection to QEMU's VNC server (`-vnc none`, no listener).
    pub async fn add_graphics_client(&mut self, client: std::os::fd::OwnedFd) -> Result<()> {
        const NAME: &str = "gns3-vnc-client";
        let args = json!({ "fdname": NAME });
        self.qmp
            .execute_with_fd("getfd", args, client.as_fd(), QMP_TIMEOUT)
            .await?;
        // QEMU's own copy now waits under NAME; add_client takes it from there.
        let args = json!({ "protocol": "vnc", "fdname": NAME, "skipauth": true });
        let added = self
            .qmp
            .execute("add_client", Some(args), QMP_TIMEOUT)
            .await;
        if added.is_err() {
            let args = json!({ "fdname": NAME });
            let _ = self.qmp.execute("closefd", Some(args), QMP_TIMEOUT).await;
        }
        added?;
        Ok(())
    }

    /// Puts `image` in the CD-ROM drive (an ISO, opened read-only), or ejects its media
    /// when empty, even if the guest has locked the tray.
    pub async fn set_media(&mut self, image: &str) -> Result<()> {
        let (command, args) = if image.is_empty() {
            ("eject", json!({ "id": drives::CDROM, "force": true }))
        } else {
            let args = json!({
                "id": drives::CDROM,
                "filename": image,
                "format": "raw",
                "read-only-mode": "read-only",
            });
            ("blockdev-change-medium", args)
        };
        self.qmp.execute(command, Some(args), QMP_TIMEOUT).await?;
        Ok(())
    }

    pub async fn set_link(&mut self, adapter: u32, up: bool) -> Result<()> {
        let args = json!({ "name": network::adapter_netdev(adapter), "up": up });
        self.qmp
            .execute("set_link", Some(args), QMP_TIMEOUT)
            .await?;
        Ok(())
    }

    /// Joins `t`'s UDP netdev to its adapter's hub, then raises the link. `dgram` gets the
    /// socket the daemon holds on the local port, connected to the remote; `socket` (only
    /// with `allow_unsafe_tunnels`) binds the port itself, so the daemon lets go of it.
    pub async fn plug(&mut self, t: &Tunnel, w: &Wiring<'_>) -> Result<()> {
        let ctx = w.ctx;
        let backend = Backend::allowed(w.vm, w.legacy, &self.caps, ctx.allow_unsafe_tunnels)?;
        let ep = tunnel::resolve(t, backend, ctx.udp_host).await?;
        let (n, port) = (t.adapter, t.local_port);
        match backend {
            Backend::Dgram => {
                let socket = {
                    let mut ports = ctx.ports(Pool::Udp);
                    ports.bind_at(port, ep.local)?;
                    ports.lend(port, ep.remote).map_err(|e| {
                        Error::InvalidArgument(format!(
                            "cannot send from {} to {}: {e}",
                            ep.local, ep.remote
                        ))
                    })?
                };
                let args = json!({ "fdname": tunnel::tunnel_netdev(n) });
                // QEMU keeps its own copy of the descriptor; this one closes when `socket`
                // drops, and the daemon's own stays open.
                self.qmp
                    .execute_with_fd("getfd", args, socket.as_fd(), QMP_TIMEOUT)
                    .await?;
            }
            Backend::Socket => ctx.ports(Pool::Udp).let_go(port),
        }
        for args in [
            tunnel::netdev_args(n, backend, &ep),
            tunnel::hubport_args(n),
        ] {
            self.qmp
                .execute("netdev_add", Some(args), QMP_TIMEOUT)
                .await?;
        }
        if t.suspended {
            self.suspend_link(n, true).await?;
        }
        if !w.replicate {
            // Only now: the hub always has a port besides the NIC's.
            self.netdev_del(tunnel::sink_netdev(n)).await?;
        }
        self.set_link(n, true).await
    }

    /// Stops (or lets through again) the frames of adapter `adapter`'s tunnel, both ways:
    /// its UDP netdev's link goes down, the NIC's stays up.
    pub async fn suspend_link(&mut self, adapter: u32, suspended: bool) -> Result<()> {
        let args = json!({ "name": tunnel::tunnel_netdev(adapter), "up": !suspended });
        self.qmp
            .execute("set_link", Some(args), QMP_TIMEOUT)
            .await?;
        Ok(())
    }

    /// Adapter `adapter` as it is without a tunnel: its link down, or (ReplicateLinkState
    /// false) up, with a sink on its hub. Whichever it was before.
    pub async fn unwired(&mut self, adapter: u32, w: &Wiring<'_>) -> Result<()> {
        if w.replicate {
            return self.set_link(adapter, false).await;
        }
        let added = self
            .qmp
            .execute("netdev_add", Some(tunnel::sink_args(adapter)), QMP_TIMEOUT)
            .await;
        match added {
            // The sink is there already: the adapter was unwired before.
            Err(qmp::Error::Command { desc, .. }) if desc.contains("Duplicate ID") => {}
            other => {
                other?;
            }
        }
        self.set_link(adapter, true).await
    }

    /// Removes a netdev, if it exists.
    async fn netdev_del(&mut self, id: String) -> Result<()> {
        match self
            .qmp
            .execute("netdev_del", Some(json!({ "id": id })), QMP_TIMEOUT)
            .await
        {
            Err(qmp::Error::Command { class, .. }) if class == "DeviceNotFound" => Ok(()),
            other => other.map(drop).map_err(Error::from),
        }
    }

    /// Removes adapter `adapter`'s tunnel's netdevs, whichever exist, leaving it unwired.
    async fn unplug(&mut self, adapter: u32, w: &Wiring<'_>) -> Result<()> {
        self.unwired(adapter, w).await?;
        for id in [
            tunnel::hubport_netdev(adapter),
            tunnel::tunnel_netdev(adapter),
        ] {
            self.netdev_del(id).await?;
        }
        // A descriptor passed for a netdev_add that then failed is still parked under
        // its name; there is usually none.
        let args = json!({ "fdname": tunnel::tunnel_netdev(adapter) });
        let _ = self.qmp.execute("closefd", Some(args), QMP_TIMEOUT).await;
        Ok(())
    }

    /// Puts tunnel `to` (or none) on `adapter` in place of `from`; if that fails, puts
    /// `from` back as well as QEMU lets it.
    pub async fn rewire(
        &mut self,
        adapter: u32,
        from: Option<&Tunnel>,
        to: Option<&Tunnel>,
        w: &Wiring<'_>,
    ) -> Result<()> {
        let result = self.swap(adapter, to, w).await;
        if result.is_err() {
            if let Err(e) = self.swap(adapter, from, w).await {
                tracing::error!(adapter, "cannot put the previous tunnel back: {e}");
            }
        }
        result
    }

    pub async fn swap(&mut self, adapter: u32, to: Option<&Tunnel>, w: &Wiring<'_>) -> Result<()> {
        self.unplug(adapter, w).await?;
        match to {
            Some(t) => self.plug(t, w).await,
            None => Ok(()),
        }
    }
}
