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
    /// Address the serial consoles and monitors listen on.
    pub console_host: String,
    /// First and last TCP port for consoles and monitors.
    pub console_port_range: [u16; 2],
    /// Address the UDP tunnels' local ports are bound on.
    pub udp_host: IpAddr,
    /// First and last UDP port of Manager.AllocateUdpPort.
    pub udp_port_range: [u16; 2],
    /// QEMU binary of a VM created without QemuPath: a bare name (looked up in PATH) or a path.
    pub qemu_binary: String,
    /// Accelerator of a VM created without one: auto, kvm or tcg.
    pub accelerator: Accelerator,
    /// Run every QEMU in its seccomp sandbox (`-sandbox`); a binary without one does not
    /// start.
    pub qemu_sandbox: bool,
    /// The socket of gns3-qemud-supervisor; without one, no priority above the daemon's
    /// and no cgroup CPU limits.
    pub supervisor_socket: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            console_host: "127.0.0.1".into(),
            console_port_range: [5000, 10000],
            udp_host: IpAddr::from([127, 0, 0, 1]),
            udp_port_range: [10000, 20000],
            qemu_binary: "qemu-system-x86_64".into(),
            accelerator: Accelerator::Auto,
            qemu_sandbox: true,
            supervisor_socket: None,
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
        if config.console_host.is_empty() {
            return Err(Error::Invalid {
                path: path.into(),
                why: "console_host is empty; 127.0.0.1 keeps consoles on this machine".into(),
            });
        }
        Ok(config)
    }

    pub fn console_ports(&self) -> RangeInclusive<u16> {
        self.console_port_range[0]..=self.console_port_range[1]
    }

    pub fn udp_ports(&self) -> RangeInclusive<u16> {
        self.udp_port_range[0]..=self.udp_port_range[1]
    }
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
        assert_eq!(c.console_ports(), 5000..=10000);
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
        let e = load("accelerator = \"fast\"").unwrap_err().to_string();
        assert!(e.contains("fast"), "{e}");
        assert!(load("[[[").is_err());
    }
}
