//! The websockets: the controller's notification socket (`/notifications/ws`) and the web
//! console of a node (`…/nodes/{n}/console/ws`). Their credentials are checked here rather
//! than by the HTTP middleware, because GNS3 refuses them on the socket: the upgrade is
//! accepted, one `log.error` message says why, and the socket closes with 1008 (policy).

use std::future::Future;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::app::App;
use crate::auth;
use crate::error::ApiError;

/// GNS3's words for a socket opened without the right credentials.
pub const REFUSED: &str =
    "Could not authenticate while connecting to compute WebSocket: Could not validate credentials";
/// The controller's `ping` comes after this much silence on the notification socket.
const QUIET: Duration = Duration::from_secs(5);

/// What `serve` makes of the upgrade, if the request is one and carries the configured
/// credentials; else the response that refuses it.
pub async fn accept<F>(
    app: &App,
    headers: &HeaderMap,
    upgrade: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    serve: impl FnOnce(WebSocketUpgrade) -> F,
) -> Response
where
    F: Future<Output = Response>,
{
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(e) => {
            let message = format!("this is a websocket: {}", e.body_text());
            return ApiError::BadRequest(message).into_response();
        }
    };
    match auth::check(headers, &app.config.user, &app.config.password) {
        Ok(()) => serve(upgrade).await,
        Err(e) => {
            tracing::info!("a websocket was refused: {e}");
            upgrade.on_upgrade(refuse)
        }
    }
}

async fn refuse(mut socket: WebSocket) {
    let message = json!({"action": "log.error", "event": {"message": REFUSED}});
    let _ = socket.send(Message::Text(message.to_string().into())).await;
    let close = CloseFrame {
        code: 1008,
        reason: "not authenticated".into(),
    };
    let _ = socket.send(Message::Close(Some(close))).await;
}

/// `GET /notifications/ws`: the compute's events, for as long as the controller listens.
pub async fn notifications(
    State(app): State<App>,
    headers: HeaderMap,
    upgrade: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let served = app.clone();
    accept(&app, &headers, upgrade, |upgrade| async move {
        upgrade.on_upgrade(move |socket| notify(served, socket))
    })
    .await
}

/// A `ping` at once and after every quiet spell (the controller reads the host's load from
/// it), and every event; the controller's own pings are answered as the socket is read.
async fn notify(app: App, mut socket: WebSocket) {
    let mut events = app.events.listen();
    let mut ping_at = Instant::now();
    loop {
        let message = tokio::select! {
            _ = tokio::time::sleep_until(ping_at) => {
                let usage = crate::host::usage(&app.config.images);
                json!({"action": "ping", "event": usage}).to_string()
            }
            event = events.recv() => match event {
                Ok(message) => message,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!("a notification socket missed {missed} events: too slow");
                    continue;
                }
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
        };
        if socket.send(Message::Text(message.into())).await.is_err() {
            return;
        }
        ping_at = Instant::now() + QUIET;
    }
}
