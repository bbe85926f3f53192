//! The web console of a node: `WS /projects/{p}/qemu/nodes/{n}/console/ws`, which the
//! controller relays to a browser. It is the VM's serial console as OpenConsole hands it
//! over (the scrollback first, then live): what the guest prints goes out in binary
//! frames, and what comes in (text frames, as GNS3's terminal sends keys; binary too) is
//! written to the guest. The socket closes when the VM stops.

use std::collections::HashMap;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::stream_of;
use crate::app::App;
use crate::error::{ApiError, Result};

pub async fn socket(
    State(app): State<App>,
    Path((project, node)): Path<(String, String)>,
    headers: HeaderMap,
    upgrade: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    super::sockets::accept(&app, &headers, upgrade, |upgrade| async {
        match open(&app, &project, &node).await {
            Ok(console) => upgrade.on_upgrade(move |socket| relay(socket, console)),
            Err(e) => e.into_response(),
        }
    })
    .await
}

/// The node's console, before the upgrade: a node that is unknown or not running is refused
/// with an HTTP error, which the controller shows.
async fn open(app: &App, project: &str, node: &str) -> Result<UnixStream> {
    let project = app.project(project)?;
    let node = app.node(project, node).await?;
    let fd = node
        .vm
        .open_console(HashMap::new())
        .await
        .map_err(ApiError::call(format!("open node {}'s console", node.id)))?;
    stream_of(fd, "the console")
}

async fn relay(mut socket: WebSocket, mut console: UnixStream) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = console.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let out = Message::Binary(buf[..n].to_vec().into());
                    if socket.send(out).await.is_err() {
                        return;
                    }
                }
            },
            incoming = socket.recv() => {
                let bytes = match incoming {
                    Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                    Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(_)) => continue,
                };
                if console.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        }
    }
    // The VM stopped: say so the way a closing terminal does.
    let _ = socket.send(Message::Close(None)).await;
}
