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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ports, store};

    /// Fails every call with the core error numbered `which` of [`cases`].
    struct Failing;

    fn cases() -> Vec<(vm::Error, &'static str)> {
        vec![
            (vm::Error::InvalidArgument("bad".into()), "InvalidArgument"),
            (vm::Error::NotFound("gone".into()), "NotFound"),
            (vm::Error::AlreadyExists("twice".into()), "AlreadyExists"),
            (vm::Error::InvalidState("busy".into()), "InvalidState"),
            (vm::Error::QemuNotFound("no qemu".into()), "QemuNotFound"),
            (
                vm::Error::ImageNotAccessible("no image".into()),
                "ImageNotAccessible",
            ),
            (
                vm::Error::DiskImageFailed("qemu-img".into()),
                "DiskImageFailed",
            ),
            (vm::Error::StartFailed("died".into()), "StartFailed"),
            (vm::Error::PrivilegeFailed("nice".into()), "PrivilegeFailed"),
            (vm::Error::Timeout("slow".into()), "Timeout"),
            (
                vm::Error::Port(ports::Error::Unavailable {
                    port: 5000,
                    why: "in use".into(),
                }),
                "PortUnavailable",
            ),
            (
                vm::Error::Port(ports::Error::Exhausted {
                    start: 5000,
                    end: 5001,
                }),
                "PortUnavailable",
            ),
            (vm::Error::Qmp(vm::qmp::Error::Closed), "InvalidState"),
            (
                vm::Error::Qmp(vm::qmp::Error::Malformed("x".into())),
                "Internal",
            ),
            (
                vm::Error::Store(store::Error::Full { dir: "/s".into() }),
                "Internal",
            ),
            (vm::Error::Internal("bug".into()), "Internal"),
        ]
    }

    #[zbus::interface(name = "org.gns3.Qemu.Test")]
    impl Failing {
        async fn fail(&self, which: u32) -> Result<()> {
            let mut all = cases();
            let (e, _) = all.swap_remove(which as usize);
            Err(e.into())
        }
    }

    /// Each core error reaches a client over a real (peer-to-peer) D-Bus connection as the
    /// contract's name, with the core's message as its text.
    #[tokio::test]
    async fn every_core_error_reaches_the_client_by_its_name() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let guid = zbus::Guid::generate();
        let server = zbus::connection::Builder::unix_stream(a)
            .server(guid)
            .p2p()
            .serve_at("/t", Failing)
            .build();
        let client = zbus::connection::Builder::unix_stream(b).p2p().build();
        let (server, client) = tokio::try_join!(server, client).unwrap();
        for (which, (core, name)) in cases().into_iter().enumerate() {
            let text = core.to_string();
            let reply = client
                .call_method(
                    None::<&str>,
                    "/t",
                    Some("org.gns3.Qemu.Test"),
                    "Fail",
                    &(which as u32),
                )
                .await;
            match reply {
                Err(zbus::Error::MethodError(got, message, _)) => {
                    assert_eq!(
                        got.as_str(),
                        format!("org.gns3.Qemu.Error.{name}"),
                        "{text}"
                    );
                    assert_eq!(message.as_deref(), Some(text.as_str()));
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        drop(server);
    }
}
