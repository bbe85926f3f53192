//! One VM: its settings, command line, QEMU process, QMP connection, disks and network, all
//! owned by one actor task. Everyone else holds a [`Handle`]: a channel to send it
//! [`Command`]s, and a watch of its [`View`] to read properties without waiting on it.

pub mod actor;
pub mod adopt;
pub mod base_uses;
pub mod bases;
pub mod binary;
pub mod capture;
pub mod changes;
pub mod claims;
pub mod cmdline;
pub mod custom_adapters;
pub mod disk_care;
pub mod disks;
pub mod drives;
pub mod error;
pub mod firmware;
pub mod machine;
pub mod names;
pub mod network;
pub mod options;
pub mod paths;
pub mod pci;
pub mod process;
pub mod qcow2;
pub mod qemu;
pub mod qmp;
pub mod reset;
pub mod resize;
pub mod runtime;
pub mod saved;
pub mod settings;
pub mod snapshot_table;
pub mod snapshots;
pub mod stamp;
pub mod state;
pub mod tpm;
pub mod tunnel;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::{mpsc, oneshot, watch};

pub use crate::lock::lock;
pub use crate::model::{Setting, Settings};
pub use error::{Error, Result};
pub use state::State;
pub use tunnel::Tunnel;

pub use crate::config::ConsoleAccess;
pub use crate::console::ViewOptions;
use crate::ports::Ports;
use crate::privilege::Privilege;
use crate::store::Store;

/// What every VM actor shares: where files go, the host's limits, what each QEMU binary
/// offers, and the things that must be unique across VMs (names, ports).
pub struct Context {
    pub store: Store,
    pub runtime_dir: PathBuf,
    pub console_host: String,
    pub console_access: ConsoleAccess,
    /// Bytes of console output kept per VM.
    pub console_scrollback: u64,
    pub monitor_host: String,
    pub udp_host: IpAddr,
    /// Tunnels on QEMU's `socket` netdev, which binds its port itself (`allow_unsafe_tunnels`).
    pub allow_unsafe_tunnels: bool,
    pub limits: settings::Limits,
    pub binaries: binary::Binaries,
    /// TCP: consoles and monitors.
    pub console_ports: Mutex<Ports>,
    /// UDP: the local ends of tunnels, and what clients allocated for them.
    pub udp_ports: Mutex<Ports>,
    /// name -> id of every VM.
    pub names: Mutex<HashMap<String, String>>,
    /// Which VM uses which base image, and how (linked clones or in place).
    pub bases: Mutex<base_uses::BaseUses>,
    /// Renice and CPU limits beyond the daemon's own rights.
    pub privilege: Privilege,
    /// QEMU runs in its seccomp sandbox (`qemu_sandbox`).
    pub sandbox: bool,
    /// Where the files a base image opens may lie (`image_dirs`; see `disks`).
    pub image_dirs: Vec<PathBuf>,
    /// The base images checked, while they stay unchanged.
    pub vetted: bases::Vetted,
    /// OVMF's variable templates as qcow2 (`firmware::prepare`).
    pub vars_templates: firmware::Templates,
    /// The size at which a capture file stops (`capture_max_mib`).
    pub capture_max_bytes: u64,
    /// Which VMs changed, for the lists of every VM.
    pub changes: changes::Changes,
}

/// The two port pools of [`Context`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    Console,
    Udp,
}

impl Context {
    pub fn ports(&self, pool: Pool) -> MutexGuard<'_, Ports> {
        lock(match pool {
            Pool::Console => &self.console_ports,
            Pool::Udp => &self.udp_ports,
        })
    }
}

/// Everything clients can read about a VM; published by the actor on every change.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub id: String,
    pub project: String,
    pub settings: Settings,
    pub state: State,
    pub pid: u32,
    pub accelerated: bool,
    pub tunnels: Vec<(u32, u16, String, u16)>,
    /// Each adapter's link: (adapter, carrier, suspended), as the Links property has it.
    pub links: Vec<(u32, bool, bool)>,
    pub exit_status: i32,
    pub last_error: String,
    /// Viewers of the console now (D-Bus and telnet).
    pub console_viewers: u32,
    /// Live captures: (adapter, the file it ends in).
    pub captures: Vec<(u32, String)>,
    /// A saved state is on disk, which the next Start resumes from.
    pub saved_state: bool,
}

type Reply<T> = oneshot::Sender<Result<T>>;

/// The one set of requests between the D-Bus face and a VM.
pub enum Command {
    Configure(Vec<Setting>, Reply<()>),
    Start(Reply<()>),
    Stop(Reply<()>),
    /// Stop at once, whatever OnStop says, ending a shutdown under way.
    PowerOff(Reply<()>),
    Suspend(Reply<()>),
    Resume(Reply<()>),
    Reload(Reply<()>),
    Delete(Reply<()>),
    AddTunnel(Tunnel, Reply<()>),
    RemoveTunnel(u32, Reply<()>),
    /// Suspend (true) or let through again an adapter's cable.
    SetLinkSuspended(u32, bool, Reply<()>),
    CommandLine(Reply<Vec<String>>),
    ReadLog(Reply<String>),
    OpenConsole(ViewOptions, Reply<std::os::fd::OwnedFd>),
    ReadConsole(u32, Reply<Vec<u8>>),
    HumanMonitorCommand(String, Reply<String>),
    OpenGraphics(Reply<std::os::fd::OwnedFd>),
    /// A VNC viewer's connection, accepted on VncPort.
    GraphicsClient(std::os::fd::OwnedFd, Reply<()>),
    ResetDisks(Reply<()>),
    /// Remove the stopped VM's saved state.
    DiscardSavedState(Reply<()>),
    /// Grow a disk (`hda` … `hdd`) to a size in bytes.
    ResizeDisk(String, u64, Reply<()>),
    /// The files repaired.
    RepairDisks(Reply<Vec<String>>),
    /// Capture an adapter's frames; the file's path.
    StartCapture(u32, capture::Asked, Reply<String>),
    StopCapture(u32, Reply<()>),
    /// A live pcap stream of an adapter's capture.
    OpenCapture(u32, Reply<std::os::fd::OwnedFd>),
    /// The capture of this adapter, into this file, has reached capture_max_mib.
    CaptureFull(u32, PathBuf),
}

#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    view: watch::Receiver<View>,
}

impl Handle {
    pub fn view(&self) -> watch::Ref<'_, View> {
        self.view.borrow()
    }

    /// A receiver that wakes on every change of the view, and ends when the VM is gone.
    pub fn watch(&self) -> watch::Receiver<View> {
        self.view.clone()
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T> {
        let gone = || Error::NotFound(format!("VM {} has been deleted", self.view.borrow().id));
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    pub async fn configure(&self, changes: Vec<Setting>) -> Result<()> {
        self.call(|r| Command::Configure(changes, r)).await
    }
    pub async fn start(&self) -> Result<()> {
        self.call(Command::Start).await
    }
    pub async fn stop(&self) -> Result<()> {
        self.call(Command::Stop).await
    }
    pub async fn power_off(&self) -> Result<()> {
        self.call(Command::PowerOff).await
    }
    pub async fn discard_saved_state(&self) -> Result<()> {
        self.call(Command::DiscardSavedState).await
    }
    pub async fn suspend(&self) -> Result<()> {
        self.call(Command::Suspend).await
    }
    pub async fn resume(&self) -> Result<()> {
        self.call(Command::Resume).await
    }
    pub async fn reload(&self) -> Result<()> {
        self.call(Command::Reload).await
    }
    pub async fn delete(&self) -> Result<()> {
        self.call(Command::Delete).await
    }
    pub async fn add_tunnel(&self, tunnel: Tunnel) -> Result<()> {
        self.call(|r| Command::AddTunnel(tunnel, r)).await
    }
    pub async fn remove_tunnel(&self, adapter: u32) -> Result<()> {
        self.call(|r| Command::RemoveTunnel(adapter, r)).await
    }
    pub async fn set_link_suspended(&self, adapter: u32, suspended: bool) -> Result<()> {
        self.call(|r| Command::SetLinkSuspended(adapter, suspended, r))
            .await
    }
    pub async fn command_line(&self) -> Result<Vec<String>> {
        self.call(Command::CommandLine).await
    }
    pub async fn read_log(&self) -> Result<String> {
        self.call(Command::ReadLog).await
    }
    pub async fn open_console(&self, options: ViewOptions) -> Result<std::os::fd::OwnedFd> {
        self.call(|r| Command::OpenConsole(options, r)).await
    }
    pub async fn read_console(&self, max_bytes: u32) -> Result<Vec<u8>> {
        self.call(|r| Command::ReadConsole(max_bytes, r)).await
    }
    pub async fn open_graphics(&self) -> Result<std::os::fd::OwnedFd> {
        self.call(Command::OpenGraphics).await
    }
    pub async fn repair_disks(&self) -> Result<Vec<String>> {
        self.call(Command::RepairDisks).await
    }
    pub async fn human_monitor_command(&self, command: String) -> Result<String> {
        self.call(|r| Command::HumanMonitorCommand(command, r))
            .await
    }
    pub async fn reset_disks(&self) -> Result<()> {
        self.call(Command::ResetDisks).await
    }
    pub async fn resize_disk(&self, disk: String, bytes: u64) -> Result<()> {
        self.call(|r| Command::ResizeDisk(disk, bytes, r)).await
    }
    pub async fn start_capture(&self, adapter: u32, asked: capture::Asked) -> Result<String> {
        self.call(|r| Command::StartCapture(adapter, asked, r))
            .await
    }
    pub async fn stop_capture(&self, adapter: u32) -> Result<()> {
        self.call(|r| Command::StopCapture(adapter, r)).await
    }
    pub async fn open_capture(&self, adapter: u32) -> Result<std::os::fd::OwnedFd> {
        self.call(|r| Command::OpenCapture(adapter, r)).await
    }
}

/// A [`Context`] for unit tests: a store in a temporary directory, no supervisor, and port
/// ranges on the loopback of their own (100 console ports from 45000, 100 UDP ports from
/// 55000, a hundred further on for each context), so tests running at once never probe
/// each other's ports.
#[cfg(test)]
pub mod testing {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::sync::{Arc, Mutex};

    use super::Context;
    use crate::ports::{Ports, Protocol};
    use crate::privilege::Privilege;
    use crate::store::Store;

    pub fn context() -> (tempfile::TempDir, Arc<Context>) {
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % 90;
        let console = 45000 + 100 * n..=45099 + 100 * n;
        let udp = 55000 + 100 * n..=55099 + 100 * n;
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context {
            store: Store::open(dir.path()).unwrap(),
            runtime_dir: dir.path().join("run"),
            console_host: "127.0.0.1".into(),
            console_access: super::ConsoleAccess::Members,
            console_scrollback: 4096,
            monitor_host: "127.0.0.1".into(),
            udp_host: "127.0.0.1".parse().unwrap(),
            allow_unsafe_tunnels: false,
            limits: super::settings::Limits {
                host_ram_mib: 4096,
                host_cpus: 2,
                console_ports: console.clone(),
            },
            binaries: Default::default(),
            console_ports: Mutex::new(Ports::new(Protocol::Tcp, "127.0.0.1", console)),
            udp_ports: Mutex::new(Ports::new(Protocol::Udp, "127.0.0.1", udp)),
            names: Mutex::new(HashMap::new()),
            bases: Mutex::default(),
            privilege: Privilege::new(None),
            sandbox: true,
            image_dirs: Vec::new(),
            vetted: Default::default(),
            vars_templates: Default::default(),
            capture_max_bytes: 1 << 30,
            changes: Default::default(),
        };
        (dir, Arc::new(ctx))
    }
}
