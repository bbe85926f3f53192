//! What gns3-qemud-compute is told: its TOML file (/etc/gns3-qemud/compute.toml), and flags
//! of the same names that win over it. An absent default file means the defaults; a file
//! named by `--config` must exist. A file that does not parse, or holds an unknown key,
//! stops the compute with the reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

pub const DEFAULT_CONFIG: &str = "/etc/gns3-qemud/compute.toml";
/// The GNS3 controller accepts a compute only if this is its own version, exactly (a
/// `+suffix` aside): 3.0.6 refuses 3.0.5 and 3.0.7 alike.
pub const DEFAULT_GNS3_VERSION: &str = "3.0.6";

#[derive(Debug, Parser)]
#[command(
    name = "gns3-qemud-compute",
    version,
    about = "GNS3 compute API (HTTP and websockets) in front of gns3-qemud: a GNS3 controller \
             registers this host as a compute and runs its QEMU nodes as the daemon's VMs"
)]
pub struct Flags {
    /// The configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// D-Bus address of gns3-qemud's bus (default: the system bus).
    #[arg(long, value_name = "ADDRESS")]
    pub bus: Option<String>,
    /// Address and port to serve the compute API on.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<SocketAddr>,
    /// User name the controller authenticates with (HTTP Basic).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// File whose first line is the controller's password.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// GNS3 version to answer as: the controller's own, exactly.
    #[arg(long, value_name = "X.Y.Z")]
    pub gns3_version: Option<String>,
    /// Directory of the images the controller names and uploads.
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
}

/// The file's keys: the flags' names, with `_`.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
struct File {
    bus: Option<String>,
    listen: Option<SocketAddr>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    gns3_version: Option<String>,
    images: Option<PathBuf>,
}

/// Everything the compute runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub bus: Option<String>,
    pub listen: SocketAddr,
    pub user: String,
    pub password: String,
    pub gns3_version: String,
    pub images: PathBuf,
}

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
    #[error(
        "cannot read the password file {path}: {source}. The controller authenticates with \
         HTTP Basic on every call: write the password it was given for this compute into \
         that file (first line), readable by the compute's user only"
    )]
    Password {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the password file {0} is empty: the compute does not serve without a password")]
    EmptyPassword(PathBuf),
    #[error("{0} is not a GNS3 version: give X.Y.Z, the controller's version")]
    Version(String),
}

impl Config {
    pub fn load(flags: Flags) -> Result<Config, Error> {
        let (path, must_exist) = match &flags.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let file = read_file(&path, must_exist)?;
        let password_file = flags
            .password_file
            .or(file.password_file)
            .unwrap_or_else(|| PathBuf::from("/etc/gns3-qemud/compute.password"));
        let gns3_version = flags
            .gns3_version
            .or(file.gns3_version)
            .unwrap_or_else(|| DEFAULT_GNS3_VERSION.to_string());
        if !is_version(&gns3_version) {
            return Err(Error::Version(gns3_version));
        }
        Ok(Config {
            bus: flags.bus.or(file.bus),
            listen: flags
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 3080))),
            user: flags.user.or(file.user).unwrap_or_else(|| "gns3".into()),
            password: read_password(&password_file)?,
            gns3_version,
            images: flags
                .images
                .or(file.images)
                .unwrap_or_else(|| PathBuf::from("/var/lib/gns3-qemud-compute/images")),
        })
    }
}

fn read_file(path: &Path, must_exist: bool) -> Result<File, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
            return Ok(File::default())
        }
        Err(source) => {
            return Err(Error::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    toml::from_str(&text).map_err(|source| Error::Parse {
        path: path.to_path_buf(),
        source,
    })
}

fn read_password(path: &Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Password {
        path: path.to_path_buf(),
        source,
    })?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(Error::EmptyPassword(path.to_path_buf()));
    }
    Ok(line.to_string())
}

/// `X.Y.Z` with an optional `+suffix`, as GNS3 writes its versions.
fn is_version(v: &str) -> bool {
    let core = v.split('+').next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        Flags::parse_from(std::iter::once("gns3-qemud-compute").chain(args.iter().copied()))
    }

    #[test]
    fn a_flag_wins_over_the_file_and_the_file_over_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("pw");
        std::fs::write(&password, "s3cret\nignored\n").unwrap();
        let config = dir.path().join("compute.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:4000\"\nuser = \"lab\"\npassword_file = {:?}\n\
                 images = \"/srv/images\"\n",
                password
            ),
        )
        .unwrap();
        let c = Config::load(flags(&[
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:5000",
        ]))
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(c.user, "lab");
        assert_eq!(c.password, "s3cret");
        assert_eq!(c.images, PathBuf::from("/srv/images"));
        assert_eq!(c.gns3_version, "3.0.6");
        assert_eq!(c.bus, None);
    }

    #[test]
    fn an_unknown_key_a_missing_named_file_and_no_password_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("compute.toml");
        std::fs::write(&config, "lisen = \"127.0.0.1:4000\"\n").unwrap();
        let e = Config::load(flags(&["--config", config.to_str().unwrap()])).unwrap_err();
        assert!(matches!(e, Error::Parse { .. }), "{e}");
        let missing = dir.path().join("absent.toml");
        let e = Config::load(flags(&["--config", missing.to_str().unwrap()])).unwrap_err();
        assert!(matches!(e, Error::Read { .. }), "{e}");
        let pw = dir.path().join("absent.pw");
        std::fs::write(&config, "").unwrap();
        let e = Config::load(flags(&[
            "--config",
            config.to_str().unwrap(),
            "--password-file",
            pw.to_str().unwrap(),
        ]))
        .unwrap_err();
        assert!(matches!(e, Error::Password { .. }), "{e}");
        std::fs::write(&pw, "\n").unwrap();
        let e = Config::load(flags(&[
            "--config",
            config.to_str().unwrap(),
            "--password-file",
            pw.to_str().unwrap(),
        ]))
        .unwrap_err();
        assert!(matches!(e, Error::EmptyPassword(_)), "{e}");
    }

    #[test]
    fn versions_are_gns3s() {
        assert!(is_version("3.0.6"));
        assert!(is_version("3.0.6+custom"));
        for bad in ["3.0", "3.0.x", "", "3..6", "v3.0.6"] {
            assert!(!is_version(bad), "{bad}");
        }
    }
}
