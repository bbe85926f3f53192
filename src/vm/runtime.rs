//! A VM's runtime dir, `<runtime-dir>/<id>` on a tmpfs: the files that live as long as its
//! QEMU. The QMP and serial sockets the daemon binds before QEMU starts, QEMU's pid file
//! (`-pidfile`), the console's scrollback, the marks of live changes not yet saved, the timeline of
//! QEMU's clock and the live captures. A daemon that starts again finds its QEMU
//! through them (`adopt.rs`).

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use super::capture::Live;
use crate::model::OnStop;

const PIDFILE: &str = "qemu.pid";
const QMP_SOCKET: &str = "qmp.sock";
const SERIAL_SOCKET: &str = "serial.sock";
const SCROLLBACK: &str = "console";
const PENDING_PREFIX: &str = "pending-";
const CLOCK: &str = "clock";
const CAPTURE_PREFIX: &str = "capture-";
const STOPPING: &str = "stopping";

/// A shutdown or a save under way, kept so that a daemon started again goes on with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stopping {
    pub on_stop: OnStop,
    /// When the VM is stopped hard, in milliseconds since the Unix epoch: a daemon started
    /// again reads the same moment.
    pub deadline_ms: u64,
}

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Stopping {
    /// A stop that is to be over `timeout` from now.
    pub fn within(on_stop: OnStop, timeout: std::time::Duration) -> Stopping {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        Stopping {
            on_stop,
            deadline_ms: unix_ms_now().saturating_add(timeout_ms),
        }
    }

    /// What is left of it now: zero once it is past.
    pub fn left(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.deadline_ms.saturating_sub(unix_ms_now()))
    }
}

/// A change made to a running QEMU before it is on disk. Its mark lives in the runtime dir
/// from just before the live change until the record is saved (or the change undone), so
/// a daemon killed in between knows which parts of an adopted QEMU may differ from the
/// record, and puts the record's version on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveChange {
    /// The tunnel of this adapter.
    Tunnel(u32),
    /// The priority and CPU limit.
    Limits,
    /// vCPUs plugged in (Cpus raised).
    Cpus,
    /// The CD-ROM drive's media.
    Media,
}

impl LiveChange {
    fn file(self) -> String {
        match self {
            LiveChange::Tunnel(n) => format!("{PENDING_PREFIX}tunnel-{n}"),
            LiveChange::Limits => format!("{PENDING_PREFIX}limits"),
            LiveChange::Cpus => format!("{PENDING_PREFIX}cpus"),
            LiveChange::Media => format!("{PENDING_PREFIX}media"),
        }
    }

    fn parse(file: &str) -> Option<LiveChange> {
        match file.strip_prefix(PENDING_PREFIX)? {
            "limits" => Some(LiveChange::Limits),
            "cpus" => Some(LiveChange::Cpus),
            "media" => Some(LiveChange::Media),
            rest => rest
                .strip_prefix("tunnel-")?
                .parse()
                .ok()
                .map(LiveChange::Tunnel),
        }
    }

    /// Marks `self` as changing until the mark is dropped. The runtime dir is a tmpfs that
    /// lives as long as the QEMU: no fsync.
    fn mark(self, rt: &Path) -> std::io::Result<Mark> {
        let path = rt.join(self.file());
        std::fs::write(&path, b"")?;
        Ok(Mark { path })
    }

    fn clear(self, rt: &Path) {
        let _ = std::fs::remove_file(rt.join(self.file()));
    }

    /// The marks left in `rt`.
    fn left(rt: &Path) -> Vec<LiveChange> {
        let Ok(entries) = std::fs::read_dir(rt) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| LiveChange::parse(&e.file_name().to_string_lossy()))
            .collect()
    }
}

/// A [`LiveChange`] under way; its mark goes when this is dropped, on every path out of the
/// change.
#[must_use]
pub struct Mark {
    path: PathBuf,
}

impl Drop for Mark {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The one owner of a VM's runtime files.
#[derive(Clone, Debug)]
pub struct Runtime {
    dir: PathBuf,
}

impl Runtime {
    pub fn new(dir: PathBuf) -> Runtime {
        Runtime { dir }
    }

    pub fn pidfile(&self) -> PathBuf {
        self.dir.join(PIDFILE)
    }

    pub fn qmp_socket(&self) -> PathBuf {
        self.dir.join(QMP_SOCKET)
    }

    pub fn serial_socket(&self) -> PathBuf {
        self.dir.join(SERIAL_SOCKET)
    }

    /// The control socket and pid file of the VM's swtpm (`tpm`).
    pub fn tpm_socket(&self) -> PathBuf {
        self.dir.join("swtpm.sock")
    }

    pub fn tpm_pidfile(&self) -> PathBuf {
        self.dir.join("swtpm.pid")
    }

    pub fn scrollback(&self) -> PathBuf {
        self.dir.join(SCROLLBACK)
    }

    /// Makes the dir and binds the QMP and serial sockets in it, in place of those a QEMU
    /// left.
    pub fn bind(&self) -> Result<[UnixListener; 2], String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let bind = |path: PathBuf| {
            let _ = std::fs::remove_file(&path);
            UnixListener::bind(&path).map_err(|e| format!("cannot bind {}: {e}", path.display()))
        };
        Ok([bind(self.qmp_socket())?, bind(self.serial_socket())?])
    }

    /// Marks `change` as under way on the running QEMU until the mark is dropped.
    pub fn mark(&self, change: LiveChange) -> Result<Mark, String> {
        change.mark(&self.dir).map_err(|e| {
            format!(
                "cannot write in the runtime dir {}: {e}",
                self.dir.display()
            )
        })
    }

    pub fn clear(&self, change: LiveChange) {
        change.clear(&self.dir)
    }

    /// The marks a previous daemon left.
    pub fn left(&self) -> Vec<LiveChange> {
        LiveChange::left(&self.dir)
    }

    /// The timeline of QEMU's virtual clock (`capture/clock.rs`).
    pub fn clock(&self) -> PathBuf {
        self.dir.join(CLOCK)
    }

    /// Keeps the state of a live capture, written whole (renamed over).
    pub fn save_capture(&self, live: &Live) -> Result<(), String> {
        self.write_whole(&format!("{CAPTURE_PREFIX}{}", live.adapter), live)
    }

    /// `value` as JSON in the file `name`, renamed over: a reader finds it whole or not at
    /// all. A tmpfs that lives as long as the QEMU: no fsync.
    fn write_whole(&self, name: &str, value: &impl serde::Serialize) -> Result<(), String> {
        let path = self.dir.join(name);
        let tmp = path.with_extension("tmp");
        serde_json::to_vec(value)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    pub fn remove_capture(&self, adapter: u32) {
        let _ = std::fs::remove_file(self.dir.join(format!("{CAPTURE_PREFIX}{adapter}")));
    }

    /// The live captures a previous daemon left, by adapter.
    pub fn captures(&self) -> Vec<Live> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut found: Vec<Live> = entries
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix(CAPTURE_PREFIX)
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        found.sort_by_key(|l| l.adapter);
        found
    }

    /// Keeps the stop under way, written whole (renamed over).
    pub fn begin_stop(&self, stopping: &Stopping) -> Result<(), String> {
        self.write_whole(STOPPING, stopping)
    }

    /// The stop a previous daemon left under way.
    pub fn stop_under_way(&self) -> Option<Stopping> {
        serde_json::from_slice(&std::fs::read(self.dir.join(STOPPING)).ok()?).ok()
    }

    /// Removes everything: the QEMU is gone.
    pub fn clean(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_of_live_changes_are_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let rt = Runtime::new(dir.path().to_path_buf());
        assert!(rt.left().is_empty());
        let marks: Vec<Mark> = [
            LiveChange::Tunnel(0),
            LiveChange::Tunnel(31),
            LiveChange::Limits,
            LiveChange::Cpus,
            LiveChange::Media,
        ]
        .into_iter()
        .map(|p| rt.mark(p).unwrap())
        .collect();
        std::fs::write(rt.pidfile(), b"1\n").unwrap();
        std::fs::write(dir.path().join("pending-tunnel-x"), b"").unwrap();
        let mut left = rt.left();
        left.sort_by_key(|p| format!("{p:?}"));
        assert_eq!(
            left,
            [
                LiveChange::Cpus,
                LiveChange::Limits,
                LiveChange::Media,
                LiveChange::Tunnel(0),
                LiveChange::Tunnel(31)
            ]
        );
        rt.clear(LiveChange::Tunnel(0));
        assert_eq!(rt.left().len(), 4);
        drop(marks);
        assert!(rt.left().is_empty());
    }
}
