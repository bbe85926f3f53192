//! `org.gns3.Qemu.Manager` at `/org/gns3/Qemu`: the VMs as a whole.

use std::collections::HashMap;
use std::sync::Arc;
use zbus::{interface, Connection, Message};
use zbus::{OwnedObjectPath, OwnedVariant};

use super::error::Result;
use super::listed::{self, Rows};
use super::raw;
use super::table::{ReplyFuture, Table};
use super::vm::Vm;
use crate::manager::{End, Manager};

/// The id a VM's object path names, as the manager looks VMs up: anything else is passed
/// whole, for the manager to refuse as no VM of this daemon.
fn vm_id(path: &OwnedObjectPath) -> &str {
    let path = path.as_str();
    path.strip_prefix(super::MANAGER_PATH)
        .and_then(|p| p.strip_prefix("/vm/"))
        .unwrap_or(path)
}

pub struct ManagerIface {
    pub(super) manager: Arc<Manager>,
    pub(super) console_host: String,
    pub(super) rows: Rows,
}

const LIST_VMS: &str = "ListVMs";

/// The manager's properties are all read-only; ListVMs answers from its rows kept serialized.
impl Table for ManagerIface {
    fn reply_raw<'a>(
        &'a self,
        name: &str,
        conn: &'a Connection,
        call: &'a Message,
    ) -> Option<ReplyFuture<'a>> {
        (name == LIST_VMS).then(|| {
            Box::pin(async move {
                let body = self.rows.body(&self.manager);
                raw::reply(conn, call, body, listed::SIGNATURE).await
            }) as ReplyFuture<'a>
        })
    }
}

/// The QEMU virtual machines of this host. Every VM is an object under /org/gns3/Qemu/vm/;
/// the org.freedesktop.DBus.ObjectManager on this object announces each one created
/// (InterfacesAdded) and deleted (InterfacesRemoved).
#[interface(name = "org.gns3.Qemu.Manager")]
impl ManagerIface {
    /// Create a VM. `settings` takes any writable property of org.gns3.Qemu.VM by name,
    /// plus Id (s: a UUID chosen by the caller) and Project (s: a free-form group id).
    /// Everything is checked before anything is written; a console port not given is
    /// allocated, and kept by the VM until it is deleted (see the VM's ConsolePort); a
    /// monitor port only if given. Returns the new VM's object path.
    #[zbus(name = "CreateVM")]
    async fn create_vm(
        &self,
        name: String,
        settings: HashMap<String, OwnedVariant>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<OwnedObjectPath> {
        let (changes, extra) = super::parse_settings(&settings, &["Id", "Project"])?;
        let id = extra.get("Id").map(String::as_str);
        let project = extra.get("Project").map_or("", String::as_str);
        let handle = self.manager.create(&name, id, project, changes).await?;
        let vm = Vm {
            handle,
            manager: self.manager.clone(),
        };
        Ok(super::export(conn, vm).await?)
    }

    /// The object path of the VM with this name or id (32 hex digits, dashes allowed).
    #[zbus(name = "GetVM")]
    async fn get_vm(&self, name_or_id: &str) -> Result<OwnedObjectPath> {
        let handle = self.manager.get(name_or_id)?;
        let id = handle.view().id.clone();
        super::vm_path(&id)
    }

    /// Every VM as (id, name, state, object path), in id order.
    // Checked answers it through Table::reply_raw from the rows kept serialized; this body,
    // which the macro needs for the signature, gives the same answer should a call reach it.
    #[zbus(name = "ListVMs")]
    async fn list_vms(&self) -> Result<Vec<(String, String, &'static str, OwnedObjectPath)>> {
        self.manager.map(|h| {
            let v = h.view();
            Ok((
                v.id.clone(),
                v.settings.name.clone(),
                v.state.as_str(),
                super::vm_path(&v.id)?,
            ))
        })
    }

    /// The qemu-system-* binaries found in the daemon's PATH: (path, version).
    async fn qemu_binaries(&self) -> Vec<(String, String)> {
        self.manager.qemu_binaries().await
    }

    /// A free UDP port of the daemon's range (udp_port_range) for the local end of a
    /// tunnel. It is held for the caller until a tunnel uses it (AddUdpTunnel) or it is
    /// released; held ports are not kept across daemon restarts.
    async fn allocate_udp_port(&self) -> Result<u16> {
        Ok(self.manager.allocate_udp_port()?)
    }

    /// Give back a port from AllocateUdpPort. A port a tunnel uses is freed by
    /// RemoveUdpTunnel instead (InvalidState); releasing a free port does nothing.
    async fn release_udp_port(&self, port: u16) -> Result<()> {
        Ok(self.manager.release_udp_port(port)?)
    }

    /// Wire adapter `adapter_a` of VM `a` to adapter `adapter_b` of VM `b` (two VMs of this
    /// daemon, or two adapters of one) in one call: two ports from udp_port_range, and a
    /// tunnel on each adapter facing the other's, at UdpHost; live on a VM that runs (the
    /// guest sees the cable plugged in), attached at start on one that is stopped. All or
    /// nothing: if either VM refuses its half, both keep the tunnels they had and no port is
    /// taken. An adapter wired to another of the daemon's VMs before is unplugged from it:
    /// that VM's tunnel facing it is removed once the new cable is whole. Connecting two
    /// adapters already wired to each other does nothing. Errors: NotFound (a path that is
    /// no VM of this daemon), InvalidArgument (an adapter the VM does not have, the same
    /// adapter twice, a VM whose tunnels cannot be carried), PortUnavailable (no two free
    /// ports in udp_port_range), InvalidState (a VM changing state).
    async fn connect(
        &self,
        a: OwnedObjectPath,
        adapter_a: u32,
        b: OwnedObjectPath,
        adapter_b: u32,
    ) -> Result<()> {
        let a = End {
            vm: vm_id(&a),
            adapter: adapter_a,
        };
        let b = End {
            vm: vm_id(&b),
            adapter: adapter_b,
        };
        Ok(self.manager.connect(a, b).await?)
    }

    /// Unwire adapter `adapter` of VM `vm`: its tunnel, and the tunnel of the daemon's VM
    /// facing it if one does (both ends of the cable), live where they run; their ports are
    /// freed. An adapter without a tunnel: nothing to do.
    async fn disconnect(&self, vm: OwnedObjectPath, adapter: u32) -> Result<()> {
        let end = End {
            vm: vm_id(&vm),
            adapter,
        };
        Ok(self.manager.disconnect(end).await?)
    }

    /// Stop every VM whose QEMU runs (paused ones too) as its OnStop says, all at once,
    /// and return once each has stopped, each bounded by its StopTimeout: what the host's
    /// shutdown does (gns3-qemud-guests.service calls it before systemd ends what is left).
    /// With restore_on_boot in the daemon's configuration, which VMs those were is kept first,
    /// and the first start of the daemon after the next boot of the host starts them again;
    /// without it, what an earlier call kept is forgotten. VMs started meanwhile are not
    /// stopped. Errors: those of a VM's Stop, naming the first VM that did not stop (the
    /// others are stopped all the same); Internal when what to restore cannot be kept (the
    /// VMs are stopped all the same).
    async fn stop_all(&self) -> Result<()> {
        Ok(self.manager.stop_all().await?)
    }

    /// The address at which the tunnels of this daemon's VMs are reached from this host, the
    /// remote host Connect gives each tunnel: udp_host from the daemon's configuration, or
    /// the loopback of its family when that is a wildcard (0.0.0.0: 127.0.0.1, ::: ::1).
    #[zbus(property(emits_changed_signal = "const"))]
    async fn udp_host(&self) -> String {
        self.manager.udp_host().to_string()
    }

    /// The daemon's version.
    #[zbus(property(emits_changed_signal = "const"))]
    async fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }

    /// The address the VMs' consoles listen on (telnet on each ConsolePort, served by the daemon).
    #[zbus(property(emits_changed_signal = "const"))]
    async fn console_host(&self) -> String {
        self.console_host.clone()
    }
}
