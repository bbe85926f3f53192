//! `gns3-qemud-supervisor`: see `src/supervisor/lib.rs`.

use std::os::fd::FromRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use gns3_qemud_supervisor::cgroup::{Hierarchy, Version};
use gns3_qemud_supervisor::server::Supervisor;
use gns3_qemud_supervisor::Error;

const USAGE: &str = "\
Usage: gns3-qemud-supervisor --daemon-uid UID|USER [--socket PATH]

Sets the nice value and the CPU limit of gns3-qemud's QEMU processes, which the daemon,
running unprivileged, cannot. Serves only the given uid, and only about its processes.

Options:
  --daemon-uid UID|USER  the uid of gns3-qemud (required)
  --socket PATH          listen on PATH (owned by that uid, mode 0600); without it, the
                         socket systemd passes (socket activation)
  --help                 print this help
  --version              print the version
";

struct Args {
    daemon_uid: u32,
    socket: Option<PathBuf>,
    delay_before_acting: Option<Duration>,
}

fn parse() -> Result<Option<Args>, String> {
    let mut uid = None;
    let mut socket = None;
    let mut delay_before_acting = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--help" | "-h" => {
                print!("{USAGE}");
                return Ok(None);
            }
            "--version" => {
                println!("gns3-qemud-supervisor {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "--daemon-uid" => uid = Some(resolve_uid(&value()?)?),
            "--socket" => socket = Some(PathBuf::from(value()?)),
            // Not in --help: for the test that makes a pid reused between check and act.
            "--delay-before-acting-ms" => {
                let ms = value()?;
                let ms = ms
                    .parse()
                    .map_err(|_| format!("--delay-before-acting-ms: '{ms}' is not a number"))?;
                delay_before_acting = Some(Duration::from_millis(ms));
            }
            other => return Err(format!("unknown option '{other}'; see --help")),
        }
    }
    let daemon_uid = uid.ok_or("--daemon-uid is required; see --help")?;
    Ok(Some(Args {
        daemon_uid,
        socket,
        delay_before_acting,
    }))
}

fn resolve_uid(v: &str) -> Result<u32, String> {
    if let Ok(uid) = v.parse() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(v) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        _ => Err(format!("--daemon-uid: no user '{v}'")),
    }
}

fn listener(args: &Args) -> Result<UnixListener, Error> {
    if let Some(path) = &args.socket {
        let listen = |source| Error::Listen {
            path: path.clone(),
            source,
        };
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(listen)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(listen)?;
        nix::unistd::chown(path, Some(args.daemon_uid.into()), None)
            .map_err(|e| listen(e.into()))?;
        return Ok(listener);
    }
    let fd = sd_notify::listen_fds()
        .ok()
        .and_then(|mut fds| fds.next())
        .ok_or(Error::NoSocket)?;
    // SAFETY: systemd passed this listening socket to us, and nothing else took it.
    Ok(unsafe { UnixListener::from_raw_fd(fd) })
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(Some(args)) => args,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gns3-qemud-supervisor: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match listener(&args) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("gns3-qemud-supervisor: {e}");
            return ExitCode::from(1);
        }
    };
    // On cgroup v2 the VMs' cgroups are the daemon's own, under its unit (Delegate=):
    // root makes none beside systemd's tree.
    let cgroups = Hierarchy::detect();
    let cgroups = match cgroups {
        Some(h) if h.version == Version::V1 => {
            eprintln!(
                "CPU limits: cpu.cfs_quota_us under {}",
                h.parent().display()
            );
            Some(h)
        }
        Some(_) => {
            eprintln!("CPU limits: none here (cgroup v2: the daemon's own, under its unit)");
            None
        }
        None => {
            eprintln!("CPU limits: none here (no writable cgroup has the cpu controller)");
            None
        }
    };
    eprintln!("serving uid {}", args.daemon_uid);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    Supervisor {
        daemon_uid: args.daemon_uid,
        cgroups,
        slots: Default::default(),
        delay_before_acting: args.delay_before_acting,
    }
    .serve(listener)
}
