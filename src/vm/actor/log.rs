//! QEMU's own output, qemu.log in the VM's directory: for ReadLog and for error messages.

use super::Actor;
use crate::vm::error::{Error, Result};

/// How much of qemu.log an error message carries.
const LOG_TAIL_LINES: usize = 5;
/// The largest part of qemu.log `ReadLog` returns (its end).
const MAX_LOG: u64 = 1 << 20;

impl Actor {
    pub(super) fn read_log(&self) -> Result<String> {
        use std::io::{Read, Seek, SeekFrom};
        let path = self.vm_dir().join("qemu.log");
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
            Err(e) => {
                return Err(Error::Internal(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let mut bytes = Vec::new();
        f.seek(SeekFrom::Start(len.saturating_sub(MAX_LOG)))
            .and_then(|_| f.read_to_end(&mut bytes))
            .map_err(|e| Error::Internal(format!("cannot read {}: {e}", path.display())))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The last lines of qemu.log, for error messages.
    pub(super) fn log_tail(&self) -> String {
        let log = self.read_log().unwrap_or_default();
        // QEMU warns at every start that an adapter's hub has no tunnel yet: that is the
        // design (the link is down instead), not a reason for anything.
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.contains("is not connected to host network"))
            .collect();
        if lines.is_empty() {
            return "qemu.log is empty".into();
        }
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        format!("qemu.log ends with:\n{tail}")
    }
}
