//! Command-line flags of `gns3-qemud`.

use std::ffi::OsString;
use std::path::PathBuf;

pub const USAGE: &str = "\
Usage: gns3-qemud [OPTIONS]

Runs QEMU virtual machines for network labs and exports each one as a D-Bus object
(bus name org.gns3.Qemu, manager at /org/gns3/Qemu).

Options:
  --bus ADDRESS        D-Bus address to serve on (default: the system bus)
  --state-dir DIR      where VMs are kept (default: /var/lib/gns3-qemud)
  --runtime-dir DIR    QMP sockets and pid files (default: /run/gns3-qemud)
  --config FILE        configuration file (default: /etc/gns3-qemud/gns3-qemud.toml;
                       an absent file means the defaults)
  --supervisor-socket PATH
                       socket of gns3-qemud-supervisor (default: supervisor_socket
                       of the configuration; none means no privilege at all)
  --boot-id ID         the id of this boot of the host (default: the kernel's, read
                       from /proc/sys/kernel/random/boot_id)
  --help               print this help
  --version            print the version
";

#[derive(Debug, PartialEq)]
pub struct Args {
    pub bus: Option<String>,
    pub state_dir: PathBuf,
    pub runtime_dir: PathBuf,
    pub config: PathBuf,
    pub supervisor_socket: Option<PathBuf>,
    /// The boot id as systemd passes it (`%b`): the unit's sandbox hides /proc/sys.
    pub boot_id: Option<String>,
}

#[derive(Debug, PartialEq)]
pub enum Parsed {
    Run(Args),
    Help,
    Version,
}

pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, String> {
    let mut out = Args {
        bus: None,
        state_dir: "/var/lib/gns3-qemud".into(),
        runtime_dir: "/run/gns3-qemud".into(),
        config: "/etc/gns3-qemud/gns3-qemud.toml".into(),
        supervisor_socket: None,
        boot_id: None,
    };
    let mut args = args.into_iter().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| format!("argument {a:?} is not UTF-8"))?;
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg, None),
        };
        let mut value = || -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args
                    .next()
                    .and_then(|v| v.into_string().ok())
                    .ok_or_else(|| format!("{flag} needs a value")),
            }
        };
        match flag.as_str() {
            "--help" | "-h" => return Ok(Parsed::Help),
            "--version" => return Ok(Parsed::Version),
            "--bus" => out.bus = Some(value()?),
            "--state-dir" => out.state_dir = value()?.into(),
            "--runtime-dir" => out.runtime_dir = value()?.into(),
            "--config" => out.config = value()?.into(),
            "--supervisor-socket" => out.supervisor_socket = Some(value()?.into()),
            "--boot-id" => {
                let id =
                    crate::boot::normalize(&value()?).map_err(|e| format!("--boot-id: {e}"))?;
                out.boot_id = Some(id);
            }
            other => return Err(format!("unknown option '{other}'; see --help")),
        }
    }
    Ok(Parsed::Run(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Parsed, String> {
        parse(
            std::iter::once("gns3-qemud")
                .chain(args.iter().copied())
                .map(OsString::from),
        )
    }

    #[test]
    fn defaults_and_flags() {
        let Parsed::Run(a) = p(&[]).unwrap() else {
            panic!()
        };
        assert_eq!(a.bus, None);
        assert_eq!(a.state_dir, PathBuf::from("/var/lib/gns3-qemud"));
        let Parsed::Run(a) =
            p(&["--bus", "unix:path=/x", "--state-dir=/s", "--config", "/c"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(a.bus.as_deref(), Some("unix:path=/x"));
        assert_eq!(a.state_dir, PathBuf::from("/s"));
        assert_eq!(a.config, PathBuf::from("/c"));
        assert_eq!(a.supervisor_socket, None);
        let Parsed::Run(a) = p(&["--supervisor-socket=/run/s"]).unwrap() else {
            panic!()
        };
        assert_eq!(a.supervisor_socket, Some(PathBuf::from("/run/s")));
        assert_eq!(a.boot_id, None);
        let Parsed::Run(a) = p(&["--boot-id", "3F2504E0-4F89-11D3-9A0C-0305E82C3301"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            a.boot_id.as_deref(),
            Some("3f2504e04f8911d39a0c0305e82c3301")
        );
        assert_eq!(
            p(&["--boot-id=x"]).unwrap_err(),
            "--boot-id: 'x' is not a boot id (32 hex digits, dashes allowed)"
        );
        assert_eq!(p(&["--help"]).unwrap(), Parsed::Help);
        assert!(p(&["--bus"]).unwrap_err().contains("needs a value"));
        assert!(p(&["--frobnicate"]).unwrap_err().contains("unknown option"));
    }
}
