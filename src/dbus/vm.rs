//! `org.gns3.Qemu.VM`: one object per VM. Reads come from the actor's published view;
//! everything else is a command to the actor.

use std::collections::HashMap;
use std::sync::Arc;
use zbus::object_server::SignalEmitter;
use zbus::{fdo, interface, BoxDBusError, ObjectServer, OwnedVariant, Variant};

use super::error::Result;
use super::table::{SetFuture, Table};
use crate::manager::Manager;
use crate::model::settings::ROWS;
use crate::model::table::Row;
use crate::vm::{Handle, Setting, Tunnel};

pub const INTERFACE: &str = "org.gns3.Qemu.VM";

#[derive(Clone)]
pub struct Vm {
    pub(super) handle: Handle,
    pub(super) manager: Arc<Manager>,
}

impl Vm {
    pub async fn set(&self, setting: Setting) -> Result<()> {
        Ok(self.handle.configure(vec![setting]).await?)
    }
}

/// The settings' properties come from the table: the macro serves only the status.
impl Table for Vm {
    const ROWS: &'static [Row] = ROWS;

    /// `Options` is where `-object secret,data=…` goes, a kernel command line may carry
    /// passwords too, and `LastError` quotes qemu.log, which echoes either.
    const DRIVERS_ONLY: &'static [&'static str] = &["Options", "KernelCommandLine", "LastError"];

    fn get_row(&self, name: &str) -> Option<OwnedVariant> {
        self.handle
            .view()
            .settings
            .get(name)
            .and_then(super::settings::variant)
    }

    fn set_row<'a>(&'a self, name: &str, value: &Variant<'_>) -> Option<SetFuture<'a>> {
        let setting = super::settings::parse(name, value);
        Some(Box::pin(async move {
            let boxed = |e| Box::new(e) as BoxDBusError;
            self.set(setting.map_err(boxed)?).await.map_err(boxed)
        }))
    }
}

/// A QEMU virtual machine. Settings are read-write properties (`busctl set-property`
/// works); a change is checked whole and either stored or refused with a named error.
/// Settings used by QEMU itself take effect at the next Start.
#[interface(name = "org.gns3.Qemu.VM")]
impl Vm {
    /// Start the VM and return once the guest runs. On a paused VM: resume it.
    /// Fails with StartFailed, carrying the end of qemu.log, if QEMU does not come up;
    /// then nothing is left running. Before QEMU runs, qemu-img check looks at the VM's own
    /// qcow2 files: leaked clusters are repaired (and logged), a corrupt file fails Start
    /// with DiskImageFailed naming it (RepairDisks repairs it).
    async fn start(&self) -> Result<()> {
        Ok(self.handle.start().await?)
    }

    /// Stop the VM: QMP quit, then SIGTERM, then SIGKILL, each after a bounded wait.
    /// Stopping a stopped VM does nothing.
    async fn stop(&self) -> Result<()> {
        Ok(self.handle.stop().await?)
    }

    /// Pause the guest's CPUs (QEMU keeps running). Does nothing on a paused VM.
    async fn suspend(&self) -> Result<()> {
        Ok(self.handle.suspend().await?)
    }

    /// Resume a paused guest. Does nothing on a running VM.
    async fn resume(&self) -> Result<()> {
        Ok(self.handle.resume().await?)
    }

    /// Reset the guest, as the reset button of a PC does.
    async fn reload(&self) -> Result<()> {
        Ok(self.handle.reload().await?)
    }

    /// Stop the VM if it runs, remove its files (disks, log, record), free its name and
    /// ports, and remove this object.
    async fn delete(&self, #[zbus(object_server)] server: &ObjectServer) -> Result<()> {
        let id = self.handle.view().id.clone();
        self.manager.delete(&id).await?;
        super::unexport(server, &id).await;
        Ok(())
    }

    /// Set several settings at once: all of them are stored, or none is.
    async fn configure(
        &self,
        settings: std::collections::HashMap<String, zbus::OwnedVariant>,
    ) -> Result<()> {
        let changes = super::parse_settings(&settings, &[])?.0;
        Ok(self.handle.configure(changes).await?)
    }

    /// Connect adapter `adapter` to `remote_host`:`remote_port` by a UDP tunnel from
    /// `local_port` (bound on the daemon's udp_host; Manager.AllocateUdpPort hands out free
    /// ones). The remote host is an IPv4 or IPv6 address or a name that resolves. Replaces
    /// the adapter's tunnel if it has one. On a running VM the tunnel is attached live: the
    /// guest sees the cable plugged in (carrier up). Kept in the VM's record and attached at
    /// every start.
    async fn add_udp_tunnel(
        &self,
        adapter: u32,
        local_port: u16,
        remote_host: String,
        remote_port: u16,
    ) -> Result<()> {
        let tunnel = Tunnel {
            adapter,
            local_port,
            remote_host,
            remote_port,
        };
        Ok(self.handle.add_tunnel(tunnel).await?)
    }

    /// Remove adapter `adapter`'s tunnel, live on a running VM: the guest sees the cable
    /// unplugged (carrier down). Its local port is freed. Does nothing if it has none.
    async fn remove_udp_tunnel(&self, adapter: u32) -> Result<()> {
        Ok(self.handle.remove_tunnel(adapter).await?)
    }

    /// The command line Start runs, argument by argument. The QMP socket and the serial
    /// port's socket are passed to QEMU as open file descriptors (fd=3, fd=4), bound by the
    /// daemon beforehand; tunnels are attached over QMP before the guest's CPUs start.
    async fn command_line(&self) -> Result<Vec<String>> {
        Ok(self.handle.command_line().await?)
    }

    /// QEMU's own output (qemu.log) since the last Start, at most its last MiB.
    async fn read_log(&self) -> Result<String> {
        Ok(self.handle.read_log().await?)
    }

    /// A socket connected to the running VM's serial console: read what the guest prints,
    /// write what it should read, raw bytes both ways (no telnet). It gets the scrollback
    /// first, then live output; a reader too slow to keep up loses its backlog and finds a
    /// line saying how many bytes were skipped. Any number may be open at once, beside the
    /// telnet viewers of ConsolePort. Options: Replay (b, default true: send the
    /// scrollback first), ReadOnly (b, default false: what is written is dropped).
    /// InvalidState if the VM does not run.
    async fn open_console(
        &self,
        options: std::collections::HashMap<String, zbus::OwnedVariant>,
    ) -> Result<zbus::OwnedFd> {
        let options = super::console::view_options(&options)?;
        let fd = self.handle.open_console(options).await?;
        Ok(fd.into())
    }

    /// The last `max_bytes` bytes the guest printed on its console (0: all that is kept,
    /// console_scrollback of the daemon's configuration, 256 KiB by default), for scripts.
    /// Kept across daemon restarts while the VM runs. InvalidArgument above what is kept,
    /// InvalidState if the VM does not run.
    async fn read_console(&self, max_bytes: u32) -> Result<Vec<u8>> {
        Ok(self.handle.read_console(max_bytes).await?)
    }

    /// A socket connected to the VNC server of a running VM whose Display is vnc: speak RFB
    /// on it (a VNC viewer that takes a socket, or a proxy such as websockify). Takes no
    /// options yet (a{sv}, for those to come). Any number may be open at once, beside the
    /// viewers of VncPort. InvalidState if the VM does not run or has no display.
    async fn open_graphics(
        &self,
        options: std::collections::HashMap<String, zbus::OwnedVariant>,
    ) -> Result<zbus::OwnedFd> {
        super::console::graphics_options(&options)?;
        let fd = self.handle.open_graphics().await?;
        Ok(fd.into())
    }

    /// Run one command of QEMU's human monitor (HMP: 'info status', 'sendkey ctrl-alt-delete',
    /// …) and return its output. Goes through the daemon's own QMP connection; QEMU has no
    /// monitor anyone else can reach. QEMU runs in its sandbox, so no command runs programs
    /// on the host. InvalidState if the VM does not run.
    async fn human_monitor_command(&self, command: String) -> Result<String> {
        Ok(self.handle.human_monitor_command(command).await?)
    }

    /// Return the stopped VM to its initial state: its own disks (the linked clones of its
    /// base images, the blank flash disk), its UEFI variables and its TPM state are removed,
    /// and made anew at the next Start, as at its first. Base images, settings, ports and
    /// tunnels stay. InvalidState unless the VM is stopped.
    async fn reset_disks(&self) -> Result<()> {
        Ok(self.handle.reset_disks().await?)
    }

    /// Grow the disk named disk (hda, hdb, hdc or hdd: one the VM has) to bytes, a multiple of
    /// 512 up to 16 TiB and more than its size now: a disk never shrinks. On a stopped VM
    /// its file grows (a VM that never started gets its disk made now, then grown); on a
    /// running or paused one QEMU grows it live and tells the guest, which sees the new
    /// size at once on virtio, on other interfaces once it rescans. The partitions and
    /// filesystems in it are the guest's to grow. ResetDisks brings back the base's size.
    async fn resize_disk(&self, disk: String, bytes: u64) -> Result<()> {
        Ok(self.handle.resize_disk(disk, bytes).await?)
    }

    /// Repair the stopped VM's own qcow2 files (its linked clones, its flash disk, a UEFI
    /// VM's variables) with qemu-img check -r all, as Start asks when it finds one corrupt;
    /// returns the files in which something was repaired (none if all were sound). Bases
    /// used in place (LinkedClone false) are not the VM's and are left alone. InvalidState
    /// unless the VM is stopped; DiskImageFailed, naming the file, if one cannot be
    /// repaired: then ResetDisks() starts its disks over, or delete the VM and create it
    /// again.
    async fn repair_disks(&self) -> Result<Vec<String>> {
        Ok(self.handle.repair_disks().await?)
    }

    /// The VM's id: its UUID as 32 lowercase hex digits, also the last part of the path.
    #[zbus(property(emits_changed_signal = "const"))]
    async fn id(&self) -> String {
        self.handle.view().id.clone()
    }

    /// The free-form group id given at creation (GNS3's project).
    #[zbus(property(emits_changed_signal = "const"))]
    async fn project(&self) -> String {
        self.handle.view().project.clone()
    }

    /// stopped, starting, running, paused or stopping. Follows QEMU's own events: a guest
    /// that powers off, or a QEMU that dies, turns it stopped.
    #[zbus(property)]
    async fn state(&self) -> String {
        self.handle.view().state.as_str().to_string()
    }

    /// The QEMU process id, 0 when stopped.
    #[zbus(property)]
    async fn pid(&self) -> u32 {
        self.handle.view().pid
    }

    /// Whether the running VM uses KVM (false: TCG, or stopped).
    #[zbus(property)]
    async fn accelerated(&self) -> bool {
        self.handle.view().accelerated
    }

    /// UDP tunnels, in adapter order: (adapter, local port, remote host, remote port). An
    /// adapter without one has its link down.
    #[zbus(property)]
    async fn tunnels(&self) -> Vec<(u32, u16, String, u16)> {
        self.handle.view().tunnels.clone()
    }

    /// How QEMU last ended: its exit status, minus the signal number if killed, -1 unknown.
    #[zbus(property)]
    async fn exit_status(&self) -> i32 {
        self.handle.view().exit_status
    }

    /// How many viewers the console has now: OpenConsole sockets and telnet connections.
    #[zbus(property)]
    async fn console_viewers(&self) -> u32 {
        self.handle.view().console_viewers
    }

    /// Why the VM last stopped when nobody asked it to (with the end of qemu.log); empty
    /// after a requested Stop. Read by root and members of gns3 only: anyone else reads an
    /// empty string, as InterfacesAdded carries it for everyone. A change is signalled as
    /// invalidated, without the value: read it again.
    #[zbus(property(emits_changed_signal = "invalidates"))]
    async fn last_error(&self) -> String {
        self.handle.view().last_error.clone()
    }
}

/// Emits one PropertiesChanged per change of the VM's view, with every property that
/// differs: its value, or for those only drivers read, its name among the invalidated (the
/// signal reaches every local user); ends when the VM is gone.
pub async fn mirror(vm: Vm, conn: zbus::Connection, emitter: SignalEmitter<'static>) {
    use super::table::get_all;
    let mut rx = vm.handle.watch();
    let server = conn.object_server();
    // Read from the VM itself, not through Checked: every value, whoever is listening.
    let mut last = match get_all(&vm, server, &conn, None, &emitter).await {
        Ok(props) => props,
        Err(e) => {
            tracing::error!("cannot read the VM's properties: {e}");
            return;
        }
    };
    while rx.changed().await.is_ok() {
        let Ok(now) = get_all(&vm, server, &conn, None, &emitter).await else {
            continue;
        };
        let (changed, invalidated) = changes(&last, &now);
        if !changed.is_empty() || !invalidated.is_empty() {
            let iface = zbus::names::InterfaceName::from_static_str_unchecked(INTERFACE);
            if let Err(e) =
                fdo::Properties::properties_changed(&emitter, iface, changed, invalidated.into())
                    .await
            {
                tracing::warn!("cannot emit PropertiesChanged: {e}");
            }
        }
        last = now;
    }
}

/// What PropertiesChanged says from `last` to `now`: the new values of the properties that
/// differ, and the names of those among them only drivers read, in [`Table::DRIVERS_ONLY`]
/// order, without their values.
fn changes<'a>(
    last: &HashMap<String, OwnedVariant>,
    now: &'a HashMap<String, OwnedVariant>,
) -> (HashMap<&'a str, Variant<'a>>, Vec<&'static str>) {
    let differs = |k: &str| now.get(k).is_some_and(|v| last.get(k) != Some(v));
    let changed = now
        .iter()
        .filter(|(k, _)| !Vm::DRIVERS_ONLY.contains(&k.as_str()) && differs(k))
        .filter_map(|(k, v)| Some((k.as_str(), Variant::try_from(v).ok()?)))
        .collect();
    let invalidated = Vm::DRIVERS_ONLY
        .iter()
        .copied()
        .filter(|k| differs(k))
        .collect();
    (changed, invalidated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> HashMap<String, OwnedVariant> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OwnedVariant::from(zbus::Str::from(*v))))
            .collect()
    }

    #[test]
    fn a_change_of_what_only_drivers_read_is_named_not_told() {
        let last = props(&[("Name", "a"), ("Options", "-m 64"), ("LastError", "")]);
        let now = props(&[("Name", "b"), ("Options", "-m 96"), ("LastError", "x")]);
        let (changed, invalidated) = changes(&last, &now);
        let keys: Vec<&str> = changed.keys().copied().collect();
        assert_eq!(keys, ["Name"]);
        assert_eq!(changed["Name"], Variant::from("b"));
        assert_eq!(invalidated, ["Options", "LastError"]);
        let (changed, invalidated) = changes(&now, &now);
        assert!(changed.is_empty() && invalidated.is_empty());
    }

    /// The contract says of exactly these properties that a change only invalidates them,
    /// and each is a string, so that an empty one stands for it.
    #[test]
    fn the_contract_marks_exactly_the_drivers_only_properties() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/org.gns3.Qemu.VM.xml");
        let xml = std::fs::read_to_string(path).unwrap();
        let node = zbus_xml::Node::from_reader(xml.as_bytes()).unwrap();
        let mut marked = Vec::new();
        for property in node.interfaces()[0].properties() {
            let invalidates = property.annotations().iter().any(|a| {
                a.name() == "org.freedesktop.DBus.Property.EmitsChangedSignal"
                    && a.value() == "invalidates"
            });
            if invalidates {
                assert_eq!(property.ty().to_string(), "s", "{}", property.name());
                marked.push(property.name().to_string());
            }
        }
        let mut want: Vec<&str> = Vm::DRIVERS_ONLY.to_vec();
        want.sort();
        marked.sort();
        assert_eq!(marked, want);
    }
}
