//! Finding a VM's QEMU again when the daemon starts. QEMU outlives the daemon (its own
//! session; systemd's `KillMode=process`), and leaves in the VM's runtime dir the pid file
//! it wrote (`-pidfile`) and the QMP socket the daemon bound for it (`runtime.rs`).
//!
//! A pid in a pid file is only a guess: the QEMU may have died and its pid gone to another
//! process. The process is held by pidfd first, then checked: its command line must carry
//! this very pid file, and it must have started no later than the pid file was written. Only
//! then is it adopted; anything else is left alone.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::capture::clock::Clock;
use super::process::Process;
use super::qmp::{Event, Qmp};
use super::runtime::Runtime;

/// A QEMU found running, held and connected.
pub struct Found {
    pub process: Process,
    pub qmp: Qmp,
    pub events: mpsc::UnboundedReceiver<Event>,
    /// The timeline of its clock, as the previous daemon kept it.
    pub clock: Arc<Clock>,
}

/// What the runtime dir `rt` holds: None if no QEMU was left running there, the QEMU if it
/// still runs, or why it is not there any more.
pub async fn find(rt: &Runtime, timeout: Duration) -> Result<Option<Found>, String> {
    let pidfile = rt.pidfile();
    let text = match std::fs::read_to_string(&pidfile) {
        Ok(t) => t,
        Err(_) if !rt.qmp_socket().exists() => return Ok(None),
        Err(_) => {
            // The socket is bound before QEMU is spawned, and QEMU writes its pid file
            // soon after: the previous daemon died in between, inside a Start.
            for pid in with_pidfile(&pidfile) {
                if let Ok(stray) = Process::attach(nix::unistd::Pid::from_raw(pid as i32)) {
                    let _ = stray.signal(nix::sys::signal::Signal::SIGKILL);
                }
            }
            return Err("gns3-qemud stopped while it started the VM".into());
        }
    };
    let gone = || {
        format!(
            "its QEMU (pid {}) exited while gns3-qemud was not running",
            text.trim()
        )
    };
    let pid: u32 = text.trim().parse().map_err(|_| gone())?;
    let written = std::fs::metadata(&pidfile)
        .and_then(|m| m.modified())
        .map_err(|_| gone())?;
    // Held first, checked after: the checks then speak of the process the pidfd holds.
    let process = Process::attach(nix::unistd::Pid::from_raw(pid as i32)).map_err(|_| gone())?;
    if !is_the_qemu(pid, &pidfile, written) {
        return Err(gone());
    }
    let (events_tx, events) = mpsc::unbounded_channel();
    let clock = Arc::new(Clock::load(rt.clock()));
    let connect = async {
        let stream = UnixStream::connect(rt.qmp_socket())
            .await
            .map_err(super::qmp::Error::Io)?;
        Qmp::handshake(stream, events_tx, Some(clock.clone()), timeout).await
    };
    match connect.await {
        Ok(qmp) => Ok(Some(Found {
            process,
            qmp,
            events,
            clock,
        })),
        Err(e) => {
            // A QEMU the daemon cannot control would run on unseen: it goes.
            let _ = process.signal(nix::sys::signal::Signal::SIGKILL);
            Err(format!(
                "its QEMU (pid {pid}) still ran but did not answer on QMP ({e}), so it was killed"
            ))
        }
    }
}

/// Ends the QEMUs of VMs deleted by a daemon that died before it could stop them: the
/// runtime dirs under `runtime_dir` for which `exists(id)` is false, and what they hold.
pub async fn end_orphans(runtime_dir: &Path, exists: impl Fn(&str) -> bool, timeout: Duration) {
    let Ok(entries) = std::fs::read_dir(runtime_dir) else {
        return;
    };
    for e in entries.flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        if !e.path().is_dir() || exists(&id) {
            continue;
        }
        let rt = Runtime::new(e.path());
        if let Ok(Some(mut found)) = find(&rt, timeout).await {
            let pid = found.process.pid();
            tracing::info!(vm_id = %id, pid, "ending the QEMU of a deleted VM");
            let _ = found.process.signal(nix::sys::signal::Signal::SIGKILL);
            let _ = tokio::time::timeout(timeout, found.process.exited()).await;
        }
        super::tpm::end_strays(&rt.tpm_pidfile()).await;
        rt.clean();
    }
}

/// Whether `pid` is the QEMU that wrote `pidfile` at `written`.
fn is_the_qemu(pid: u32, pidfile: &Path, written: SystemTime) -> bool {
    has_pidfile(pid, pidfile) && started_before(pid, written)
}

/// The process whose pid `pidfile` holds, if it was started with `flag value` on its
/// command line and no later than the file was written: a helper of a VM (its swtpm),
/// checked as its QEMU is.
pub fn held(pidfile: &Path, flag: &str, value: &str) -> Option<Process> {
    let pid: u32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let written = std::fs::metadata(pidfile).and_then(|m| m.modified()).ok()?;
    let process = Process::attach(nix::unistd::Pid::from_raw(pid as i32)).ok()?;
    (has_args(pid, flag, value.as_bytes()) && started_before(pid, written)).then_some(process)
}

/// Every process started with `flag value` on its command line, held.
pub fn all_with(flag: &str, value: &str) -> Vec<Process> {
    // Held first, checked again after: the check then speaks of the process held.
    crate::procfs::pids()
        .into_iter()
        .filter(|&pid| has_args(pid, flag, value.as_bytes()))
        .filter_map(|pid| Process::attach(nix::unistd::Pid::from_raw(pid as i32)).ok())
        .filter(|p| has_args(p.pid(), flag, value.as_bytes()))
        .collect()
}

fn started_before(pid: u32, written: SystemTime) -> bool {
    let (Some(started), Ok(written)) = (start_time(pid), written.duration_since(UNIX_EPOCH)) else {
        return false;
    };
    // Ticks are coarse and the two clocks are read apart: a second of slack.
    started <= written + Duration::from_secs(1)
}

/// Whether `pid` was started with `-pidfile <pidfile>`, as our QEMUs are: each VM has a
/// runtime dir of its own, so no other process has it (a `cat` of the file does not count).
fn has_pidfile(pid: u32, pidfile: &Path) -> bool {
    has_args(pid, "-pidfile", pidfile.as_os_str().as_encoded_bytes())
}

fn has_args(pid: u32, flag: &str, value: &[u8]) -> bool {
    crate::procfs::args(pid)
        .windows(2)
        .any(|pair| pair[0] == flag.as_bytes() && pair[1] == value)
}

/// The processes started with `pidfile` on their command line.
fn with_pidfile(pidfile: &Path) -> Vec<u32> {
    crate::procfs::pids()
        .into_iter()
        .filter(|&pid| has_pidfile(pid, pidfile))
        .collect()
}

/// When `pid` started, since the epoch: field 22 of its stat is in clock ticks since boot.
/// Boot is placed on the epoch by the boot-time clock rather than `/proc/stat`, which the
/// unit hides (ProcSubset=pid).
fn start_time(pid: u32) -> Option<Duration> {
    use nix::time::{clock_gettime, ClockId};
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks: u64 = crate::procfs::stat_field(&stat, 22)?.parse().ok()?;
    // SAFETY: sysconf only reads a constant.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    let since_boot = Duration::from(clock_gettime(ClockId::CLOCK_BOOTTIME).ok()?);
    let now = Duration::from(clock_gettime(ClockId::CLOCK_REALTIME).ok()?);
    let boot = now.checked_sub(since_boot)?;
    Some(boot + Duration::from_millis(ticks * 1000 / hz.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_the_qemu_only_with_the_pidfile_on_its_command_line_and_started_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("qemu.pid");
        // sh takes `-pidfile <path>` as $0 and $1, so they are on its command line.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30; :", "-pidfile"])
            .arg(&pidfile)
            .spawn()
            .unwrap();
        let pid = child.id();
        std::thread::sleep(Duration::from_millis(50));
        let now = SystemTime::now();
        assert!(is_the_qemu(pid, &pidfile, now));
        // A pid file written before the process started: the pid was recycled.
        let long_ago = now - Duration::from_secs(3600);
        assert!(!is_the_qemu(pid, &pidfile, long_ago));
        // Another VM's pid file.
        assert!(!is_the_qemu(pid, &dir.path().join("other/qemu.pid"), now));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!is_the_qemu(pid, &pidfile, now));
        // The path alone, as `cat <pidfile>` has it, is not enough.
        let mut reader = std::process::Command::new("sh")
            .args(["-c", "sleep 30; :"])
            .arg(&pidfile)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(!is_the_qemu(reader.id(), &pidfile, SystemTime::now()));
        assert!(with_pidfile(&pidfile).is_empty());
        reader.kill().unwrap();
        reader.wait().unwrap();
    }
}
