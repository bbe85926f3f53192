//! Every failure of a request, and the one place it becomes what GNS3 expects: a status and a
//! JSON body `{"message": …}` (plus `image` and `exception` for a missing image, which makes
//! the controller upload it). 401 for credentials, 404 for unknown projects and nodes, 409
//! for everything the user must fix, with the daemon's own message; never a 500 for bad input.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// The D-Bus errors the daemon names (dbus/org.gns3.Qemu.Manager.xml) start with this.
const DAEMON_ERRORS: &str = "org.gns3.Qemu.Error.";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Not authenticated")]
    NoCredentials,
    #[error("Invalid compute username or password")]
    BadCredentials,
    #[error("Project ID {0} doesn't exist")]
    NoProject(String),
    #[error("Node ID {0} doesn't exist")]
    NoNode(String),
    #[error("{0}")]
    NotFound(String),
    /// What the user must fix: a value the daemon lacks, a state that forbids the call.
    #[error("{0}")]
    Conflict(String),
    #[error("The image '{0}' is missing")]
    ImageMissing(String),
    /// The request itself is malformed (JSON of the wrong shape, a bad id in the path).
    #[error("{0}")]
    BadRequest(String),
    #[error("Request body too large: {0}")]
    TooLarge(String),
    /// A call the daemon refused or failed: `what` is e.g. "start node n1".
    #[error("Cannot {what}: {message}")]
    Daemon {
        what: String,
        name: String,
        message: String,
    },
    /// The daemon is not on the bus, or the bus is gone.
    #[error("Cannot {what}: gns3-qemud is not reachable: {why}")]
    Unreachable { what: String, why: String },
    #[error("{0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, ApiError>;

impl ApiError {
    /// The daemon's (or the bus's) answer to a call made to `what` (e.g. "start node n1").
    pub fn call(what: impl Into<String>) -> impl FnOnce(zbus::Error) -> ApiError {
        let what = what.into();
        move |e| match e {
            zbus::Error::MethodError(name, message, _) => ApiError::Daemon {
                what,
                name: name.to_string(),
                message: message.unwrap_or_default(),
            },
            zbus::Error::FDO(fdo) => ApiError::from_fdo(what, *fdo),
            other => ApiError::Unreachable {
                what,
                why: other.to_string(),
            },
        }
    }

    fn from_fdo(what: String, e: zbus::fdo::Error) -> ApiError {
        use zbus::fdo::Error as F;
        match e {
            F::UnknownObject(m) | F::UnknownInterface(m) => ApiError::Daemon {
                what,
                name: "org.freedesktop.DBus.Error.UnknownObject".into(),
                message: m,
            },
            F::ServiceUnknown(m) | F::NameHasNoOwner(m) | F::NoReply(m) | F::Disconnected(m) => {
                ApiError::Unreachable { what, why: m }
            }
            F::AccessDenied(m) => ApiError::Daemon {
                what,
                name: format!("{DAEMON_ERRORS}AccessDenied"),
                message: m,
            },
            F::ZBus(z) => ApiError::call(what)(z),
            other => ApiError::Daemon {
                what,
                name: "org.freedesktop.DBus.Error.Failed".into(),
                message: other.to_string(),
            },
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NoCredentials | ApiError::BadCredentials => StatusCode::UNAUTHORIZED,
            ApiError::NoProject(_) | ApiError::NoNode(_) | ApiError::NotFound(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::Conflict(_) | ApiError::ImageMissing(_) => StatusCode::CONFLICT,
            ApiError::BadRequest(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Daemon { name, .. } => match name.strip_prefix(DAEMON_ERRORS) {
                Some("NotFound") => StatusCode::NOT_FOUND,
                Some("Internal") => StatusCode::INTERNAL_SERVER_ERROR,
                Some("Timeout") => StatusCode::GATEWAY_TIMEOUT,
                Some(_) => StatusCode::CONFLICT,
                // The node's object is gone (deleted in between): as unknown as never made.
                None if name.ends_with("UnknownObject") => StatusCode::NOT_FOUND,
                None => StatusCode::CONFLICT,
            },
            ApiError::Unreachable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!("{self}");
        } else {
            tracing::debug!("{status}: {self}");
        }
        let body = match &self {
            ApiError::ImageMissing(image) => json!({
                "message": self.to_string(),
                "image": image,
                "exception": "ImageMissingError",
            }),
            _ => json!({ "message": self.to_string() }),
        };
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon(name: &str) -> ApiError {
        ApiError::Daemon {
            what: "start node n1".into(),
            name: name.into(),
            message: "because".into(),
        }
    }

    #[test]
    fn the_daemons_errors_are_conflicts_but_for_not_found_internal_and_timeout() {
        assert_eq!(
            daemon("org.gns3.Qemu.Error.InvalidArgument").status(),
            StatusCode::CONFLICT
        );
        assert_eq!(
            daemon("org.gns3.Qemu.Error.InvalidState").status(),
            StatusCode::CONFLICT
        );
        assert_eq!(
            daemon("org.gns3.Qemu.Error.NotFound").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            daemon("org.freedesktop.DBus.Error.UnknownObject").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            daemon("org.gns3.Qemu.Error.Internal").status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(daemon("x").to_string(), "Cannot start node n1: because");
    }
}
