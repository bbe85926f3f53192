//! Captures of a link's end: the VM's own (StartCapture, StopCapture), and its live pcap
//! stream (OpenCapture) relayed as the chunked body GNS3's controller follows until the
//! capture ends.

use std::collections::HashMap;

use axum::body::{Body as HttpBody, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use super::links::{target, PortPath};
use super::Body;
use crate::app::App;
use crate::error::{ApiError, Result};

pub fn routes() -> Router<App> {
    let port = "/projects/{project}/qemu/nodes/{node}/adapters/{adapter}/ports/{port}/capture";
    Router::new()
        .route(&format!("{port}/start"), post(start))
        .route(&format!("{port}/stop"), post(stop))
        .route(&format!("{port}/stream"), get(stream))
}

#[derive(Deserialize)]
pub struct Start {
    /// The daemon names the file (in the VM's directory); the name asked for is not kept.
    #[allow(dead_code)]
    capture_file_name: Option<String>,
    data_link_type: Option<String>,
}

pub async fn start(
    State(app): State<App>,
    Path(path): Path<PortPath>,
    Body(body): Body<Start>,
) -> Result<Json<Value>> {
    let (_, node, adapter) = target(&app, path).await?;
    match body.data_link_type.as_deref() {
        None | Some("DLT_EN10MB") => {}
        Some(other) => {
            return Err(ApiError::Conflict(format!(
                "data link type {other} is not supported: a QEMU adapter carries Ethernet \
                 (DLT_EN10MB)"
            )))
        }
    }
    let path = node
        .vm
        .start_capture(adapter, HashMap::new())
        .await
        .map_err(ApiError::call(format!("capture adapter {adapter}")))?;
    Ok(Json(json!({ "pcap_file_path": path })))
}

pub async fn stop(State(app): State<App>, Path(path): Path<PortPath>) -> Result<StatusCode> {
    let (_, node, adapter) = target(&app, path).await?;
    node.vm
        .stop_capture(adapter)
        .await
        .map_err(ApiError::call(format!("end adapter {adapter}'s capture")))?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn stream(State(app): State<App>, Path(path): Path<PortPath>) -> Result<Response> {
    let (_, node, adapter) = target(&app, path).await?;
    let fd = node
        .vm
        .open_capture(adapter)
        .await
        .map_err(ApiError::call(format!("open adapter {adapter}'s capture")))?;
    let socket = super::stream_of(fd, "the capture socket")?;
    // The body ends when the daemon closes the socket: the capture ended.
    let chunks = futures_util::stream::unfold(socket, |mut socket| async move {
        let mut buf = vec![0u8; 64 * 1024];
        match socket.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<Bytes, std::io::Error>(Bytes::from(buf)), socket))
            }
            Err(e) => Some((Err(e), socket)),
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/vnd.tcpdump.pcap")
        .body(HttpBody::from_stream(chunks))
        .map_err(|e| ApiError::Internal(e.to_string()))
}
