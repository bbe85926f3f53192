//! The process around the VMs: logging, directories, the bus connection, readiness for
//! systemd, the VMs a boot of the host starts, and a clean exit on SIGTERM that leaves the
//! VMs running.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::prelude::*;

use crate::boot;
use crate::cli::Args;
use crate::config::{Config, ConsoleAccess};
use crate::dbus;
use crate::manager::{Defaults, Manager};
use crate::ports::{Ports, Protocol};
use crate::privilege::Privilege;
use crate::store::{self, Store};
use crate::vm::{self, settings::Limits, Context};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the state directory: {0}")]
    Store(#[from] store::Error),
    #[error("cannot load the VMs: {0}")]
    Load(#[from] vm::Error),
    #[error("D-Bus: {0}")]
    Bus(#[from] zbus::Error),
    #[error("cannot own {name} on the bus: {reason}")]
    Name { name: &'static str, reason: String },
    #[error("cannot watch for signals: {0}")]
    Signal(#[source] std::io::Error),
}

/// To the journal when systemd gave us a journal stream, else to stderr. `RUST_LOG` filters
/// (default: info).
pub fn init_logging() {
    let filter: tracing_subscriber::filter::Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
        });
    // Fields as the design names them (VM_ID, VM_NAME), so `journalctl VM_ID=<id>` finds a
    // VM's messages; tracing-journald would prefix them F_.
    let journal = std::env::var_os("JOURNAL_STREAM")
        .and_then(|_| tracing_journald::layer().ok())
        .map(|layer| layer.with_field_prefix(None));
    let registry = tracing_subscriber::registry().with(filter);
    match journal {
        Some(layer) => registry.with(layer).init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(false),
            )
            .init(),
    }
}

fn host_ram_mib() -> u64 {
    nix::sys::sysinfo::sysinfo().map_or(u64::from(u32::MAX), |i| i.ram_total() / (1024 * 1024))
}

fn host_cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

pub async fn run(args: Args, config: Config) -> Result<(), Error> {
    for dir in [&args.state_dir, &args.runtime_dir] {
        std::fs::create_dir_all(dir).map_err(|source| Error::Dir {
            path: dir.clone(),
            source,
        })?;
    }
    let supervisor = args
        .supervisor_socket
        .clone()
        .or(config.supervisor_socket.clone());
    match &supervisor {
        Some(path) => {
            tracing::info!(socket = %path.display(), "priorities go through the supervisor, and CPU limits on cgroup v1")
        }
        None => tracing::info!(
            "no supervisor: priorities above the daemon's, and CPU limits in a cgroup v1, are not available"
        ),
    }
    if config.console_access == ConsoleAccess::Any {
        tracing::warn!(
            console_host = %config.console_host,
            "console_access = \"any\": whoever reaches {} gets the consoles of the VMs, often a root shell",
            config.console_host
        );
    }
    if config.allow_unsafe_tunnels {
        tracing::warn!(
            "allow_unsafe_tunnels = true: tunnels on QEMU's socket netdev (LegacyNetworking, or a QEMU without dgram) bind their ports themselves, and any user of this host can bind the same port and take their frames"
        );
    }
    let ctx = Arc::new(Context {
        store: Store::open(&args.state_dir)?,
        runtime_dir: args.runtime_dir.clone(),
        console_host: config.console_host.clone(),
        console_access: config.console_access,
        console_scrollback: config.console_scrollback,
        monitor_host: config.monitor_host.clone(),
        udp_host: config.udp_host,
        allow_unsafe_tunnels: config.allow_unsafe_tunnels,
        limits: Limits {
            host_ram_mib: host_ram_mib(),
            host_cpus: host_cpus(),
            console_ports: config.console_ports(),
        },
        console_ports: Mutex::new(Ports::new(
            Protocol::Tcp,
            &config.console_host,
            config.console_ports(),
        )),
        udp_ports: Mutex::new(Ports::new(
            Protocol::Udp,
            &config.udp_host.to_string(),
            config.udp_ports(),
        )),
        binaries: Default::default(),
        names: Mutex::new(HashMap::new()),
        bases: Mutex::default(),
        privilege: Privilege::new(supervisor.clone()),
        sandbox: config.qemu_sandbox,
        image_dirs: config.image_dirs.clone(),
        vetted: Default::default(),
        vars_templates: Default::default(),
        capture_max_bytes: config.capture_max_mib << 20,
        changes: Default::default(),
    });
    let manager = Arc::new(
        Manager::load(
            ctx,
            Defaults {
                qemu_binary: config.qemu_binary.clone(),
                accelerator: config.accelerator,
            },
        )
        .await?
        .restore_on_boot(config.restore_on_boot),
    );
    let builder = match &args.bus {
        Some(address) => zbus::connection::Builder::address(address.as_str()),
        None => zbus::connection::Builder::system(),
    };
    let conn = builder.build().await?;
    // Watch for signals before telling anyone we are up, so an early SIGTERM is not lost.
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
    dbus::serve(&conn, manager.clone(), config.console_host.clone())
        .await
        .map_err(|e| match e {
            zbus::Error::NameTaken => Error::Name {
                name: dbus::BUS_NAME,
                reason: "another process owns it (is gns3-qemud already running?)".into(),
            },
            zbus::Error::MethodError(_, Some(msg), _) => Error::Name {
                name: dbus::BUS_NAME,
                reason: msg,
            },
            other => Error::Bus(other),
        })?;
    let vms = manager.list().len();
    tracing::info!(vms, bus = args.bus.as_deref().unwrap_or("system"), "ready");
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!("cannot notify systemd: {e}");
    }
    // Loading the VMs read every record at once and announced every object: with thousands
    // of VMs, tens of MiB the allocator would otherwise keep.
    crate::heap::give_back_soon();
    // After READY=1 and beside the bus: guests take their time to boot, and the daemon
    // serves the VMs (and their state as it changes) meanwhile.
    match args.boot_id.clone().map_or_else(boot::kernel_boot_id, Ok) {
        Ok(id) => {
            let manager = manager.clone();
            tokio::spawn(async move { manager.after_boot(&id).await });
        }
        Err(e) => tracing::error!(
            "this boot of the host cannot be told from a restart of the daemon, so no VM is started for Autostart or restore_on_boot: {e}"
        ),
    }
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: exiting, VMs keep running"),
        _ = int.recv() => tracing::info!("SIGINT: exiting, VMs keep running"),
        _ = watchdog(&conn) => {}
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    Ok(())
}

/// Pings systemd's watchdog (`WatchdogSec=`) at half its interval, each time after asking
/// the bus who owns our name: a daemon whose runtime or bus connection is stuck, or that
/// lost its name, stops pinging, and systemd restarts it (the VMs run on, and the new
/// daemon finds them). Never returns.
async fn watchdog(conn: &zbus::Connection) {
    let Some(interval) = watchdog_interval() else {
        return std::future::pending().await;
    };
    let period = interval / 2;
    tracing::info!(?period, "pinging the systemd watchdog");
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        // The bus driver's own interface: the system bus lets anyone call it.
        let owner = async {
            let reply = conn
                .call_method(
                    Some("org.freedesktop.DBus"),
                    "/org/freedesktop/DBus",
                    Some("org.freedesktop.DBus"),
                    "GetNameOwner",
                    &(dbus::BUS_NAME),
                )
                .await?;
            reply.body().deserialize::<String>()
        };
        match tokio::time::timeout(period, owner).await {
            Ok(Ok(owner)) if conn.unique_name().is_some_and(|me| me.as_str() == owner) => {
                if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]) {
                    tracing::warn!("cannot ping the systemd watchdog: {e}");
                }
            }
            Ok(Ok(owner)) => {
                tracing::error!(%owner, "{} is owned by another connection", dbus::BUS_NAME)
            }
            Ok(Err(e)) => tracing::warn!("the bus does not say who owns {}: {e}", dbus::BUS_NAME),
            Err(_) => tracing::warn!("the bus does not answer in {period:?}"),
        }
    }
}

/// `WatchdogSec=` as systemd passes it: `WATCHDOG_USEC`, for this process unless
/// `WATCHDOG_PID` names another (sd_watchdog_enabled(3); sd-notify's own check also wants
/// `WATCHDOG_PID` set).
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let for_us =
        std::env::var("WATCHDOG_PID").map_or(true, |pid| pid.parse() == Ok(std::process::id()));
    (for_us && usec > 0).then(|| Duration::from_micros(usec))
}
