//! The compute API's routes, under /v3/compute, each behind HTTP Basic authentication; what
//! each does is in the file named for its part of the API. A route GNS3 has but this compute
//! does not is a 404 with a message, like every other error (`error.rs`).

mod capture;
mod compute;
mod console;
mod links;
mod nodes;
mod projects;
mod sockets;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::app::App;
use crate::error::ApiError;

/// The largest JSON body taken: a node's settings are a few KiB; image uploads have a route
/// of their own, without a limit.
pub const MAX_BODY: usize = 1 << 20;

pub fn router(app: App) -> Router {
    let api = Router::new()
        .route("/capabilities", get(compute::capabilities))
        .route("/version", get(compute::version))
        .route("/statistics", get(compute::statistics))
        .route("/network/interfaces", get(compute::interfaces))
        .route("/qemu/capabilities", get(compute::qemu_capabilities))
        .route("/projects", post(projects::create))
        .route(
            "/projects/{project}",
            get(projects::get)
                .put(projects::update)
                .delete(projects::delete),
        )
        .route("/projects/{project}/close", post(projects::close))
        .route("/projects/{project}/ports/udp", post(projects::udp_port))
        .merge(nodes::routes())
        .merge(links::routes())
        .merge(capture::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .merge(crate::images::routes());
    let authenticated = Router::new()
        .nest("/v3/compute", api)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::auth::require,
        ));
    // The websockets check their credentials themselves (`sockets.rs`).
    Router::new()
        .route("/v3/compute/notifications/ws", get(sockets::notifications))
        .route(
            "/v3/compute/projects/{project}/qemu/nodes/{node}/console/ws",
            get(console::socket),
        )
        .merge(authenticated)
        .with_state(app)
}

/// A socket the daemon handed over (OpenConsole, OpenCapture), for tokio.
fn stream_of(fd: zbus::OwnedFd, what: &str) -> Result<tokio::net::UnixStream, ApiError> {
    let socket = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(fd));
    socket
        .set_nonblocking(true)
        .map_err(|e| ApiError::Internal(format!("{what}: {e}")))?;
    tokio::net::UnixStream::from_std(socket).map_err(|e| ApiError::Internal(format!("{what}: {e}")))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("{uri} is not a route of this compute"))
}

/// A JSON body whose rejection is GNS3's JSON error, not axum's plain text.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(JsonRejection::BytesRejection(e)) => Err(ApiError::TooLarge(e.body_text())),
            Err(JsonRejection::MissingJsonContentType(_)) => {
                Err(ApiError::BadRequest("the body must be JSON".into()))
            }
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}
