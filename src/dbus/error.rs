//! The named errors of the contract (`org.gns3.Qemu.Error.*`), and the one place the core's
//! errors become them.

use crate::vm;

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.gns3.Qemu.Error")]
pub enum Error {
    #[zbus(error)]
    ZBus(zbus::Error),
    InvalidArgument(String),
    NotFound(String),
    AlreadyExists(String),
    InvalidState(String),
    QemuNotFound(String),
    ImageNotAccessible(String),
    DiskImageFailed(String),
    StartFailed(String),
    PortUnavailable(String),
    PrivilegeFailed(String),
    AccessDenied(String),
    Timeout(String),
    Internal(String),
}

impl From<vm::Error> for Error {
    fn from(e: vm::Error) -> Self {
        let text = e.to_string();
        match e {
            vm::Error::InvalidArgument(_) => Error::InvalidArgument(text),
            vm::Error::NotFound(_) => Error::NotFound(text),
            vm::Error::AlreadyExists(_) => Error::AlreadyExists(text),
            vm::Error::InvalidState(_) => Error::InvalidState(text),
            vm::Error::QemuNotFound(_) => Error::QemuNotFound(text),
            vm::Error::ImageNotAccessible(_) => Error::ImageNotAccessible(text),
            vm::Error::DiskImageFailed(_) => Error::DiskImageFailed(text),
            vm::Error::StartFailed(_) => Error::StartFailed(text),
            vm::Error::PrivilegeFailed(_) => Error::PrivilegeFailed(text),
            vm::Error::Timeout(_) => Error::Timeout(text),
            vm::Error::Port(crate::ports::Error::Unavailable { .. }) => {
                Error::PortUnavailable(text)
            }
            vm::Error::Port(crate::ports::Error::Exhausted { .. }) => Error::PortUnavailable(text),
            vm::Error::Qmp(crate::vm::qmp::Error::Closed) => Error::InvalidState(text),
            vm::Error::Qmp(_) | vm::Error::Store(_) | vm::Error::Internal(_) => {
                tracing::error!("internal error: {text}");
                Error::Internal(text)
            }
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
