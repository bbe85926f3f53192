//! What can go wrong with a VM, in the core's words. `src/dbus/error.rs` maps this to the
//! named D-Bus errors, in one place.

use crate::{ports, store};

use super::qmp;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidState(String),
    #[error("{0}")]
    QemuNotFound(String),
    #[error("{0}")]
    ImageNotAccessible(String),
    #[error("{0}")]
    DiskImageFailed(String),
    #[error("{0}")]
    StartFailed(String),
    #[error("{0}")]
    PrivilegeFailed(String),
    #[error("{0}")]
    Timeout(String),
    #[error(transparent)]
    Port(#[from] ports::Error),
    #[error("could not save the VM's state: {0}")]
    Store(#[from] store::Error),
    #[error("QEMU monitor (QMP): {0}")]
    Qmp(#[source] qmp::Error),
    #[error("{0}")]
    Internal(String),
}

impl From<qmp::Error> for Error {
    fn from(e: qmp::Error) -> Self {
        match e {
            qmp::Error::Timeout(what) => Error::Timeout(format!(
                "QEMU did not answer {what} in time (is it stopped or hung?)"
            )),
            other => Error::Qmp(other),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shows a value in an error message without flooding it: long values are cut.
pub fn shown(v: &str) -> String {
    const MAX: usize = 80;
    if v.chars().count() <= MAX {
        return v.to_string();
    }
    let cut: String = v.chars().take(MAX).collect();
    format!("{cut}… ({} bytes)", v.len())
}

/// Refuses a value of more than `max` bytes.
pub fn check_len(key: &str, v: &str, max: usize) -> Result<()> {
    if v.len() > max {
        return Err(Error::InvalidArgument(format!(
            "{key} is {} bytes long; at most {max} are allowed",
            v.len()
        )));
    }
    Ok(())
}
