//! `org.gns3.Qemu.VM`: one object per VM. Reads come from the actor's published view;
//! everything else is a command to the actor.

use std::sync::Arc;
use zbus::{interface, BoxDBusError, ObjectServer, OwnedVariant, Variant};

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

    /// Stop the VM as OnStop says and return once it is stopped. power-off: QEMU quits at
    /// once (QMP quit, then SIGTERM, then SIGKILL, each after a bounded wait). shutdown: the
    /// ACPI power button is pressed and the guest has StopTimeout seconds to power itself off;
    /// then it is stopped hard, and LastError says so. save-state: the guest's state is saved
    /// (SavedState) and QEMU quits; the next Start resumes from it. While a shutdown is under way
    /// the VM is stopping: another Stop waits for the same end, PowerOff ends it at once, Start
    /// and Delete are refused with InvalidState, and so are settings applied only while stopped;
    /// other settings are stored, and the console stays open. While a save is under way, every call waits for it to end.
    /// Stopping a stopped VM does nothing.
    async fn stop(&self) -> Result<()> {
        Ok(self.handle.stop().await?)
    }

    /// Stop the VM at once, whatever OnStop says: QMP quit, then SIGTERM, then SIGKILL, each
    /// after a bounded wait. A shutdown under way ends here (its Stop returns too); nothing is
    /// saved. Does nothing on a stopped VM.
    async fn power_off(&self) -> Result<()> {
        Ok(self.handle.power_off().await?)
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
            suspended: false,
        };
        Ok(self.handle.add_tunnel(tunnel).await?)
    }

    /// Remove adapter `adapter`'s tunnel, live on a running VM: the guest sees the cable
    /// unplugged (carrier down). Its local port is freed. Does nothing if it has none.
    async fn remove_udp_tunnel(&self, adapter: u32) -> Result<()> {
        Ok(self.handle.remove_tunnel(adapter).await?)
    }

    /// Suspend adapter `adapter`'s cable (true): nothing passes either way, while the guest
    /// keeps its carrier, as if the far end went silent; false lets it pass again. Live on
    /// a running VM, kept in the record (and so across restarts) until the tunnel is
    /// removed or replaced. InvalidArgument if the adapter has no tunnel. Shown in Links.
    async fn set_link_suspended(&self, adapter: u32, suspended: bool) -> Result<()> {
        Ok(self.handle.set_link_suspended(adapter, suspended).await?)
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

    /// Remove the stopped VM's saved state (SavedState), so that the next Start boots the
    /// guest afresh. Does nothing when there is none. InvalidState unless the VM is stopped.
    async fn discard_saved_state(&self) -> Result<()> {
        Ok(self.handle.discard_saved_state().await?)
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

    /// Capture the frames of adapter `adapter` of the running or paused VM into a pcap file
    /// in the VM's directory, and return its path. The frames are recorded on the guest's
    /// side of the adapter, so the capture goes on across AddUdpTunnel and RemoveUdpTunnel
    /// (an adapter without a tunnel records nothing until one is plugged), Suspend and
    /// Resume, and a restart of the daemon; it ends with StopCapture, when its file reaches
    /// capture_max_mib, and with the VM. Records carry the wall-clock time the frame passed
    /// (paused time accounted for); until the capture ends the file is written beside its
    /// path (with .part added) with QEMU's own times. Options: SnapLength (u, 64 to 262144,
    /// default 65535: the bytes kept of each frame), Direction (s: both (default), in: what
    /// the guest receives, out: what it sends). InvalidState if the adapter is captured
    /// already or the VM does not run.
    async fn start_capture(
        &self,
        adapter: u32,
        options: std::collections::HashMap<String, zbus::OwnedVariant>,
    ) -> Result<String> {
        let asked = super::console::capture_options(&options)?;
        Ok(self.handle.start_capture(adapter, asked).await?)
    }

    /// End the capture of adapter `adapter`: its file is complete when this returns. Does
    /// nothing if the adapter has none.
    async fn stop_capture(&self, adapter: u32) -> Result<()> {
        Ok(self.handle.stop_capture(adapter).await?)
    }

    /// A socket that carries the capture of adapter `adapter` as a live pcap stream, from
    /// the start of the capture, with wall-clock times (`tshark -r -`, `wireshark -k -i -`);
    /// it closes once the capture ends. Writes to it are dropped. InvalidState if the
    /// adapter has no capture.
    async fn open_capture(&self, adapter: u32) -> Result<zbus::OwnedFd> {
        Ok(self.handle.open_capture(adapter).await?.into())
    }

    /// The live captures, in adapter order: (adapter, the path of the file).
    #[zbus(property)]
    async fn captures(&self) -> Vec<(u32, String)> {
        self.handle.view().captures.clone()
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

    /// Every adapter's link, in adapter order: (adapter, carrier, suspended). carrier: the
    /// guest sees a cable (the adapter has a tunnel, or ReplicateLinkState is false; at the
    /// next Start for a stopped VM). suspended: the tunnel passes nothing
    /// (SetLinkSuspended).
    #[zbus(property)]
    async fn links(&self) -> Vec<(u32, bool, bool)> {
        self.handle.view().links.clone()
    }

    /// How QEMU last ended: its exit status, minus the signal number if killed, -1 unknown.
    #[zbus(property)]
    async fn exit_status(&self) -> i32 {
        self.handle.view().exit_status
    }

    /// Whether a saved state is on disk (OnStop save-state): the guest's RAM and devices as
    /// Stop saved them, in saved-state.qcow2 and the VM's qcow2 drives, which the next Start
    /// resumes from (tunnels and links as they are then) and removes before the guest runs on.
    /// A save that fails or passes StopTimeout stops the VM hard and keeps nothing; a state
    /// that cannot be loaded fails Start with StartFailed and is discarded; LastError says
    /// why. A state a save or a load left partial (gns3-qemud or QEMU killed in the middle) is
    /// removed when the daemon starts. A change to a setting the state depends on (QemuPath,
    /// Ram, Cpus, MaxCpus, Adapters, AdapterType, CustomAdapters, MacAddress, the disks and
    /// their interfaces, LinkedClone, MachineType, Firmware, BiosImage, Tpm, CpuModel,
    /// Accelerator), ResizeDisk and ResetDisks discard it, and LastError says so.
    #[zbus(property)]
    async fn saved_state(&self) -> bool {
        self.handle.view().saved_state
    }

    /// How many viewers the console has now: OpenConsole sockets and telnet connections.
    #[zbus(property)]
    async fn console_viewers(&self) -> u32 {
        self.handle.view().console_viewers
    }

    /// Why the VM last stopped when nobody asked it to (with the end of qemu.log), or why a
    /// Stop had to power it off (a shutdown past StopTimeout); empty after a Stop that went
    /// as asked. Read by root and members of gns3 only: anyone else reads an
    /// empty string, as InterfacesAdded carries it for everyone. A change is signalled as
    /// invalidated, without the value: read it again.
    #[zbus(property(emits_changed_signal = "invalidates"))]
    async fn last_error(&self) -> String {
        self.handle.view().last_error.clone()
    }
}
