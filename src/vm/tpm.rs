//! The TPM of a VM with Tpm: a swtpm of its own, its state in the VM's directory (`tpm/`).
//! The daemon binds swtpm's control socket and hands it over as a descriptor, so QEMU can
//! connect the moment it starts; swtpm runs in a session of its own and is held by pidfd,
//! like QEMU, and ended with it. `--terminate` ends it when QEMU closes the control channel,
//! which is what happens when QEMU dies while no daemon runs; its pid file (`--pid`) is how
//! a restarted daemon finds it again.

use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::timeout;

use super::adopt;
use super::cmdline::FIRST_FD;
use super::error::{Error, Result};
use super::paths::which;
use super::process::Process;

pub const STATE_DIR: &str = "tpm";
const LOG: &str = "swtpm.log";
/// How long swtpm gets to exit after SIGTERM before SIGKILL.
const END_GRACE: Duration = Duration::from_secs(5);

/// QEMU's part of the command line: the TPM on swtpm's control socket. tpm-crb is the
/// interface of a q35 (and what Windows 11 expects there); a pc has an ISA bus for tpm-tis.
pub fn args(socket: &Path, q35: bool) -> Vec<String> {
    let socket = socket.to_string_lossy().replace(',', ",,");
    vec![
        "-chardev".into(),
        format!("socket,id=gns3-tpm,path={socket}"),
        "-tpmdev".into(),
        "emulator,id=tpm0,chardev=gns3-tpm".into(),
        "-device".into(),
        format!("{},tpmdev=tpm0", if q35 { "tpm-crb" } else { "tpm-tis" }),
    ]
}

/// swtpm's command line: the control socket on [`FIRST_FD`], already listening.
fn command(swtpm: &Path, vm_dir: &Path, pidfile: &Path) -> Vec<String> {
    let opt = |p: &Path| p.to_string_lossy().replace(',', ",,");
    vec![
        swtpm.to_string_lossy().into_owned(),
        "socket".into(),
        "--tpm2".into(),
        "--tpmstate".into(),
        format!("dir={}", opt(&vm_dir.join(STATE_DIR))),
        "--ctrl".into(),
        format!("type=unixio,fd={FIRST_FD}"),
        "--pid".into(),
        pid_arg(pidfile),
        "--terminate".into(),
    ]
}

fn pid_arg(pidfile: &Path) -> String {
    format!("file={}", pidfile.to_string_lossy().replace(',', ",,"))
}

/// The swtpm binary, looked for before a Start makes anything.
pub fn binary() -> Result<PathBuf> {
    which("swtpm".as_ref()).ok_or_else(|| {
        Error::StartFailed(
            "Tpm needs swtpm, which is not in PATH; install the Debian package swtpm, or set Tpm to false".into(),
        )
    })
}

/// A VM's running swtpm.
pub struct Swtpm {
    process: Process,
}

impl Swtpm {
    /// Starts the VM's swtpm on a control socket bound at `socket`, its pid file at
    /// `pidfile` (both in the VM's runtime dir, which exists).
    pub fn start(swtpm: &Path, vm_dir: &Path, socket: &Path, pidfile: &Path) -> Result<Swtpm> {
        let state = vm_dir.join(STATE_DIR);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&state)
            .map_err(|e| Error::Internal(format!("cannot create {}: {e}", state.display())))?;
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)
            .map_err(|e| Error::Internal(format!("cannot bind {}: {e}", socket.display())))?;
        let log_path = vm_dir.join(LOG);
        let log = std::fs::File::create(&log_path)
            .map_err(|e| Error::Internal(format!("cannot create {}: {e}", log_path.display())))?;
        let fd = OwnedFd::from(listener);
        let process = Process::spawn(&command(swtpm, vm_dir, pidfile), vm_dir, log, &[&fd], 0)
            .map_err(|e| Error::StartFailed(format!("cannot run {}: {e}", swtpm.display())))?;
        Ok(Swtpm { process })
    }

    /// The swtpm a previous daemon started for the VM whose swtpm pid file is `pidfile`.
    pub fn find(pidfile: &Path) -> Option<Swtpm> {
        adopt::held(pidfile, "--pid", &pid_arg(pidfile)).map(|process| Swtpm { process })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Ends it once its QEMU is gone (it has nothing to save: its state is written at each
    /// command), and reaps it.
    pub async fn end(mut self) {
        for sig in [Signal::SIGTERM, Signal::SIGKILL] {
            if let Err(e) = self.process.signal(sig) {
                tracing::warn!(pid = self.pid(), "cannot send {sig} to swtpm: {e}");
            }
            if timeout(END_GRACE, self.process.exited()).await.is_ok() {
                return;
            }
        }
        tracing::error!(pid = self.pid(), "swtpm does not die");
    }
}

/// Ends every swtpm started with `pidfile` (written or not yet): those of a QEMU that is
/// gone, or never ran.
pub async fn end_strays(pidfile: &Path) {
    for mut process in adopt::all_with("--pid", &pid_arg(pidfile)) {
        tracing::info!(
            pid = process.pid(),
            "ending the swtpm of a QEMU that is gone"
        );
        let _ = process.signal(Signal::SIGKILL);
        let _ = timeout(END_GRACE, process.exited()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_of_swtpm_and_qemu() {
        let cmd = command(
            Path::new("/usr/bin/swtpm"),
            Path::new("/var/lib/gns3-qemud/vms/a,b"),
            Path::new("/run/gns3-qemud/ab/swtpm.pid"),
        );
        assert_eq!(
            cmd.join(" "),
            "/usr/bin/swtpm socket --tpm2 --tpmstate dir=/var/lib/gns3-qemud/vms/a,,b/tpm \
             --ctrl type=unixio,fd=3 --pid file=/run/gns3-qemud/ab/swtpm.pid --terminate"
        );
        let socket = Path::new("/run/gns3-qemud/ab/swtpm.sock");
        assert_eq!(
            args(socket, false).join(" "),
            "-chardev socket,id=gns3-tpm,path=/run/gns3-qemud/ab/swtpm.sock \
             -tpmdev emulator,id=tpm0,chardev=gns3-tpm -device tpm-tis,tpmdev=tpm0"
        );
        assert!(args(socket, true).ends_with(&["tpm-crb,tpmdev=tpm0".to_string()]));
    }
}
