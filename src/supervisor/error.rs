//! Everything the supervisor can fail at, one flat enum whose variants name the process and
//! the file involved, so a log line alone tells what to look at.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no socket to serve: pass --socket PATH, or start from a systemd socket unit")]
    NoSocket,
    #[error("cannot listen on {path}: {source}")]
    Listen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot create {path}: {source}")]
    Mkdir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove {path}: {source}")]
    Rmdir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("process {pid} is gone")]
    Gone { pid: u32 },
    #[error("the descriptor sent for process {pid} is not a pidfd of it ({why})")]
    NotItsPidfd { pid: u32, why: String },
    #[error("process {pid} belongs to uid {owner}, not to the caller (uid {caller})")]
    NotYours { pid: u32, owner: u32, caller: u32 },
    #[error("process {pid} is '{comm}', not a QEMU system emulator (qemu-system-*)")]
    NotQemu { pid: u32, comm: String },
    #[error(
        "process {pid} has no CPU-limit cgroup and is not the caller's child (a QEMU found \
         again after a restart of the daemon): its CPU limit can only be set from its next start"
    )]
    NotPlaced { pid: u32 },
    #[error(
        "no writable cgroup here has the cpu controller; the caller limits CPU itself (cpulimit)"
    )]
    NoCpuController,
    #[error("cannot send signal {signal} to process {pid}: {source}")]
    Signal {
        pid: u32,
        signal: i32,
        #[source]
        source: io::Error,
    },
    #[error("the threads of process {pid} did not stop within {after:?}")]
    NotStopped {
        pid: u32,
        after: std::time::Duration,
    },
    #[error("cannot set the nice value of thread {tid} of process {pid} to {nice}: {source}")]
    Renice {
        pid: u32,
        tid: u32,
        nice: i32,
        #[source]
        source: io::Error,
    },
    #[error("cannot run cpulimit for process {pid}: {source}")]
    Cpulimit {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("bad request: {0}")]
    BadRequest(String),
}

impl Error {
    /// Whether the caller lacks the right, as opposed to the system failing a right action.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Error::NotYours { .. }
                | Error::NotItsPidfd { .. }
                | Error::NotQemu { .. }
                | Error::NotPlaced { .. }
                | Error::BadRequest(_)
        )
    }

    /// Whether the kernel said the caller lacks a privilege for it.
    pub fn is_permission(&self) -> bool {
        let source = match self {
            Error::Renice { source, .. }
            | Error::Write { source, .. }
            | Error::Mkdir { source, .. }
            | Error::Cpulimit { source, .. } => source,
            _ => return false,
        };
        source.kind() == io::ErrorKind::PermissionDenied
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
