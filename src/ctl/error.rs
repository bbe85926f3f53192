//! What can go wrong, and the one place it becomes a message and an exit code (systemd's
//! tools' codes: 1 refused or failed, 3 not running or timed out (a stop forced after its
//! `--timeout` too), 4 no such unit; clap gives 2 for usage).

use std::process::ExitCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Failed to connect to the bus: {0}")]
    Connect(#[source] zbus::Error),
    #[error("No VM named or with id '{0}'.")]
    NoSuchVm(String),
    /// A call the daemon (or the bus) refused or failed: `what` is e.g. "start r1".
    #[error("Failed to {what}: {}", describe(.source))]
    Call {
        what: String,
        #[source]
        source: zbus::Error,
    },
    /// A setting given on the command line that the contract does not take.
    #[error("Invalid setting '{given}': {why}")]
    Setting { given: String, why: String },
    #[error("{vm} has no property '{property}'.")]
    NoProperty { vm: String, property: String },
    #[error("Refusing to delete {0}: it is {1}. Stop it first, or pass --force.")]
    Running(String, String),
    #[error("Failed to write the output: {0}")]
    Output(#[from] std::io::Error),
    /// A call the daemon refused with InvalidState because the VM does not run.
    #[error("Failed to {what}: {vm} is {state}. Start it first: `gns3-qemuctl start {vm}`.")]
    NotRunning {
        what: String,
        vm: String,
        state: String,
    },
    /// `wait` ran out of time; the message says which VMs were not there yet.
    #[error("Timed out after {after}: {pending}.")]
    TimedOut { after: String, pending: String },
    /// `stop --timeout` powered the VM off: it had not stopped as its OnStop says in time.
    #[error("{vm} did not stop within {after}: it was powered off.")]
    Forced { vm: String, after: String },
    #[error("No VM in lab '{0}'.")]
    NoVmInLab(String),
    #[error("Invalid regular expression '{given}': {why}")]
    Pattern { given: String, why: String },
    /// Several commands run at once failed; each already said why.
    #[error("{0} of the operations failed.")]
    Several(usize),
    /// A cable that cannot be made or removed as asked.
    #[error("Failed to link: {0}")]
    Link(String),
    #[error("Failed to read {file}: {source}")]
    ReadFile {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// A lab file that is wrong: its file, line, column and what.
    #[error("{0}")]
    LabFile(#[from] crate::lab::Error),
    /// A lab that cannot be brought up as its file says, found before any call.
    #[error("Failed to bring up lab {lab}: {why}")]
    Lab { lab: String, why: String },
    /// `up` did all it could; what is left needs the VMs stopped (each already told).
    #[error("Lab {0} is up, but not all as its file says: see above.")]
    Unapplied(String),
    #[error("Refusing to destroy lab {0} without --yes.")]
    NotConfirmed(String),
    /// An adapter given on the command line that is not VM:ethN.
    #[error("Invalid adapter: {0}")]
    Endpoint(String),
    #[error("Failed to write {file}: {source}")]
    WriteFile {
        file: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A failed call of `what`.
    pub fn call(what: impl Into<String>) -> impl FnOnce(zbus::Error) -> Error {
        let what = what.into();
        move |source| Error::Call { what, source }
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::NotRunning { .. } | Error::TimedOut { .. } | Error::Forced { .. } => {
                ExitCode::from(3)
            }
            Error::NoSuchVm(_) | Error::NoVmInLab(_) => ExitCode::from(4),
            _ => ExitCode::FAILURE,
        }
    }

    /// What to do about it, for the errors a person can fix: joining the group the bus
    /// policy lets in, or starting the daemon.
    pub fn hint(&self) -> Option<&'static str> {
        let source = match self {
            Error::Connect(e) | Error::Call { source: e, .. } => e,
            _ => return None,
        };
        match error_name(source)?.as_str() {
            "org.freedesktop.DBus.Error.AccessDenied" => Some(
                "Only root and members of the group gns3 may use gns3-qemud: \
                 `usermod -a -G gns3 $USER`, then log in again.",
            ),
            "org.freedesktop.DBus.Error.ServiceUnknown"
            | "org.freedesktop.DBus.Error.NameHasNoOwner" => {
                Some("gns3-qemud is not running: `systemctl start gns3-qemud`.")
            }
            _ => None,
        }
    }
}

/// The D-Bus error name of a failed call, if it is one.
pub fn error_name(e: &zbus::Error) -> Option<String> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.to_string()),
        zbus::Error::FDO(fdo) => Some(zbus::DBusError::name(fdo.as_ref()).to_string()),
        _ => None,
    }
}

/// `Name: message` for a D-Bus error, else zbus's own description.
fn describe(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, Some(message), _) => format!("{name}: {message}"),
        zbus::Error::FDO(fdo) => {
            let name = zbus::DBusError::name(fdo.as_ref());
            match zbus::DBusError::description(fdo.as_ref()) {
                Some(message) => format!("{name}: {message}"),
                None => name.to_string(),
            }
        }
        other => other.to_string(),
    }
}
