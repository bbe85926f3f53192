//! The daemon's configuration file (TOML). An absent file means the defaults; a file that
//! does not parse, or holds an unknown key, stops the daemon with the reason.

use serde::Deserialize;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use crate::model::Accelerator;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid configuration: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the consoles' telnet ports listen on.
    pub console_host: String,
    /// Who may connect to a console's telnet port.
    pub console_access: ConsoleAccess,
    /// Bytes of console output kept per VM, replayed to each new viewer.
    pub console_scrollback: u64,
    /// Address the monitors listen on (MonitorPort); a loopback address, since a monitor
    /// is served to root and members of gns3 only.
    pub monitor_host: String,
    /// First and last TCP port for consoles and monitors. Every VM keeps its console port
    /// from creation to deletion, so the range bounds how many VMs can be defined: the
    /// default's 15 001 ports hold 10 000 VMs and room for monitors.
    pub console_port_range: [u16; 2],
    /// Address the UDP tunnels' local ports are bound on.
    pub udp_host: IpAddr,
    /// First and last UDP port of Manager.AllocateUdpPort.
    pub udp_port_range: [u16; 2],
    /// Allow tunnels on QEMU's `socket` netdev (LegacyNetworking, or a QEMU without
    /// `dgram`): QEMU binds their ports itself, so another user of the host can take them.
    pub allow_unsafe_tunnels: bool,
    /// QEMU binary of a VM created without QemuPath: a bare name (looked up in PATH) or a path.
    pub qemu_binary: String,
    /// Accelerator of a VM created without one: auto, kvm or tcg.
    pub accelerator: Accelerator,
    /// Absolute directories a base image that opens other files (a backing file, an
    /// external data file) may take them from; with none, such a base is refused.
    pub image_dirs: Vec<PathBuf>,
    /// Run every QEMU in its seccomp sandbox (`-sandbox`); a binary without one does not
    /// start.
    pub qemu_sandbox: bool,
    /// The socket of gns3-qemud-supervisor; without one, no priority above the daemon's
    /// and no cgroup CPU limits.
    pub supervisor_socket: Option<PathBuf>,
    /// The size in MiB at which a packet capture's file stops.
    pub capture_max_mib: u64,
    /// Start again, at the next boot of the host, the VMs that ran when it shut down
    /// (Manager.StopAll, which gns3-qemud-guests.service calls).
    pub restore_on_boot: bool,
}

/// Who may connect to a console's telnet port (`console_access`). D-Bus (OpenConsole) is
/// the bus policy's, whatever this says.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleAccess {
    /// Root and members of gns3, as on the bus: the peer is found in the kernel's socket
    /// table, which sees only connections from this host.
    Members,
    /// Whoever can reach console_host (a GUI on another host, as GNS3 does).
    Any,
    /// No telnet ports: consoles only through D-Bus.
    None,
}

/// The most capture_max_mib may be: 1 TiB.
pub const MAX_CAPTURE_MIB: u64 = 1 << 20;

/// The most console_scrollback may be: what a viewer is sent at once.
pub const MAX_SCROLLBACK: u64 = 64 << 20;

impl Default for Config {
    fn default() -> Self {
        Config {
            console_host: "127.0.0.1".into(),
            console_access: ConsoleAccess::Members,
            console_scrollback: 256 << 10,
            monitor_host: "127.0.0.1".into(),
            console_port_range: [5000, 20000],
            udp_host: IpAddr::from([127, 0, 0, 1]),
            udp_port_range: [10000, 20000],
            allow_unsafe_tunnels: false,
            qemu_binary: "qemu-system-x86_64".into(),
            accelerator: Accelerator::Auto,
            image_dirs: Vec::new(),
            qemu_sandbox: true,
            supervisor_socket: None,
            capture_max_mib: 1024,
            restore_on_boot: false,
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(source) => {
                return Err(Error::Read {
                    path: path.into(),
                    source,
                })
            }
        };
        let config: Config = toml::from_str(&text).map_err(|source| Error::Parse {
            path: path.into(),
            source,
        })?;
        for (key, [start, end]) in [
            ("console_port_range", config.console_port_range),
            ("udp_port_range", config.udp_port_range),
        ] {
            if start == 0 || start >= end {
                return Err(Error::Invalid {
                    path: path.into(),
                    why: format!(
                        "{key} [{start}, {end}] must be two ports, the first above 0 and below the second"
                    ),
                });
            }
        }
        config.check().map_err(|why| Error::Invalid {
            path: path.into(),
            why,
        })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        let address = |key: &str, host: &str| {
            host.parse::<IpAddr>().map_err(|_| {
                format!("{key} '{host}' is not an IP address; 127.0.0.1 keeps it on this machine")
            })
        };
        let console = address("console_host", &self.console_host)?;
        if self.console_access == ConsoleAccess::Members && !console.is_loopback() {
            return Err(format!(
                "console_access = \"members\" needs a loopback console_host, not '{}': who connects \
                 is known only for connections from this host. Set console_access = \"any\" to open \
                 consoles to the network (anyone who reaches the port gets the console), or \"none\"",
                self.console_host
            ));
        }
        if !address("monitor_host", &self.monitor_host)?.is_loopback() {
            return Err(format!(
                "monitor_host '{}' is not a loopback address: a monitor runs commands on the host and \
                 is served only to root and members of gns3, who are known only on this host",
                self.monitor_host
            ));
        }
        check_image_dirs(&self.image_dirs)?;
        if !(1..=MAX_SCROLLBACK).contains(&self.console_scrollback) {
            return Err(format!(
                "console_scrollback {} must be 1 to {MAX_SCROLLBACK} bytes",
                self.console_scrollback
            ));
        }
        if !(1..=MAX_CAPTURE_MIB).contains(&self.capture_max_mib) {
            return Err(format!(
                "capture_max_mib {} must be 1 to {MAX_CAPTURE_MIB} (MiB)",
                self.capture_max_mib
            ));
        }
        Ok(())
    }

    pub fn console_ports(&self) -> RangeInclusive<u16> {
        self.console_port_range[0]..=self.console_port_range[1]
    }

    pub fn udp_ports(&self) -> RangeInclusive<u16> {
        self.udp_port_range[0]..=self.udp_port_range[1]
    }
}

/// `image_dirs`: absolute, and directories where they exist (one may be a mount that comes
/// later; until then it holds no image).
fn check_image_dirs(dirs: &[PathBuf]) -> Result<(), String> {
    for dir in dirs {
        if !dir.is_absolute() {
            return Err(format!(
                "image_dirs entry '{}' is not an absolute path; give directories starting with /",
                dir.display()
            ));
        }
        if dir.exists() && !dir.is_dir() {
            return Err(format!(
                "image_dirs entry '{}' is not a directory; give the directory the images are in",
                dir.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
    }

    #[test]
    fn absent_file_means_defaults() {
        let c = Config::load(Path::new("/nonexistent/gns3-qemud.toml")).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.console_ports(), 5000..=20000);
    }

    #[test]
    fn the_packaged_example_is_the_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/gns3-qemud.toml");
        assert_eq!(Config::load(&example).unwrap(), Config::default());
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let c =
            load("accelerator = \"tcg\"\nconsole_port_range = [6000, 6100]\nudp_host = \"::1\"\n")
                .unwrap();
        assert_eq!(c.accelerator, Accelerator::Tcg);
        assert_eq!(c.console_ports(), 6000..=6100);
        assert_eq!(c.udp_host, IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
        assert_eq!(c.udp_ports(), 10000..=20000);
        assert_eq!(c.console_host, "127.0.0.1");
        assert_eq!(c.supervisor_socket, None);
        assert_eq!(c.capture_max_mib, 1024);
        assert!(!c.allow_unsafe_tunnels);
        assert!(!c.restore_on_boot);
        assert!(load("restore_on_boot = true").unwrap().restore_on_boot);
        assert!(
            load("allow_unsafe_tunnels = true")
                .unwrap()
                .allow_unsafe_tunnels
        );
        let c = load("supervisor_socket = \"/run/s.sock\"").unwrap();
        assert_eq!(c.supervisor_socket, Some(PathBuf::from("/run/s.sock")));
    }

    #[test]
    fn bad_files_say_why() {
        let e = load("consol_host = \"x\"").unwrap_err().to_string();
        assert!(e.contains("consol_host"), "{e}");
        let e = load("console_port_range = [7000, 6000]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("7000"), "{e}");
        let e = load("udp_port_range = [0, 10]").unwrap_err().to_string();
        assert!(e.contains("udp_port_range"), "{e}");
        let e = load("udp_host = \"localhost\"").unwrap_err().to_string();
        assert!(e.contains("udp_host"), "{e}");
        let e = load("console_host = \"0.0.0.0\"").unwrap_err().to_string();
        assert!(e.contains("console_access = \"any\""), "{e}");
        assert!(load("console_host = \"0.0.0.0\"\nconsole_access = \"any\"").is_ok());
        let e = load("console_host = \"localhost\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an IP address"), "{e}");
        let e = load("monitor_host = \"192.0.2.1\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("loopback"), "{e}");
        let e = load("console_access = \"all\"").unwrap_err().to_string();
        assert!(e.contains("all"), "{e}");
        let e = load("console_scrollback = 0").unwrap_err().to_string();
        assert!(e.contains("console_scrollback"), "{e}");
        assert_eq!(load("capture_max_mib = 3").unwrap().capture_max_mib, 3);
        for bad in ["capture_max_mib = 0", "capture_max_mib = 1048577"] {
            let e = load(bad).unwrap_err().to_string();
            assert!(
                e.contains("capture_max_mib") && e.contains("1 to 1048576"),
                "{e}"
            );
        }
        let e = load("allow_unsafe_tunnels = \"yes\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("allow_unsafe_tunnels"), "{e}");
        let e = load("restore_on_boot = 1").unwrap_err().to_string();
        assert!(e.contains("restore_on_boot"), "{e}");
        let e = load("accelerator = \"fast\"").unwrap_err().to_string();
        assert!(e.contains("fast"), "{e}");
        assert!(load("[[[").is_err());
    }

    #[test]
    fn image_dirs_are_absolute_directories() {
        let dir = tempfile::tempdir().unwrap();
        let c = load(&format!(
            "image_dirs = [{:?}, \"/not/yet/mounted\"]",
            dir.path()
        ))
        .unwrap();
        assert_eq!(
            c.image_dirs,
            [dir.path(), Path::new("/not/yet/mounted")].map(PathBuf::from)
        );
        let e = load("image_dirs = [\"images\"]").unwrap_err().to_string();
        assert!(e.ends_with("image_dirs entry 'images' is not an absolute path; give directories starting with /"), "{e}");
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let e = load(&format!("image_dirs = [{file:?}]"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a directory"), "{e}");
        let e = load("image_dirs = \"/srv\"").unwrap_err().to_string();
        assert!(e.contains("image_dirs"), "{e}");
    }
}
