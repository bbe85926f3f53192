//! QEMU nodes: `/projects/{p}/qemu/nodes[/{n}[/action]]`. A node is the daemon's VM whose Id
//! is the node id and whose Project is the project id; its GNS3 properties become settings
//! through `properties`. Creating a node that exists already in that project configures it
//! instead: the controller re-opens a closed project by creating its nodes again.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value};
use zbus::Variant;

use super::Body;
use crate::app::{App, Node};
use crate::error::{ApiError, Result};
use crate::ids::{self, Id};
use crate::images;
use crate::node;
use crate::properties::{self, Conv, ROWS};

type Settings = BTreeMap<&'static str, Variant<'static>>;

pub fn routes() -> Router<App> {
    let node = "/projects/{project}/qemu/nodes/{node}";
    Router::new()
        .route("/projects/{project}/qemu/nodes", post(create))
        .route(node, get(read).put(update).delete(delete))
        .route(&format!("{node}/start"), post(start))
        .route(&format!("{node}/stop"), post(stop))
        .route(&format!("{node}/suspend"), post(suspend))
        .route(&format!("{node}/resume"), post(resume))
        .route(&format!("{node}/reload"), post(reload))
        .route(&format!("{node}/console/reset"), post(console_reset))
}

async fn reply(app: &App, project: Id, node: &Node) -> Result<Value> {
    Ok(node::json(
        app,
        project,
        node.id,
        &app.node_props(&node.path).await?,
    ))
}

/// Works out (and caches) the md5 of every image the settings name, for the node JSON.
async fn checksum_images(settings: &Settings) -> Result<()> {
    for row in ROWS.iter().filter(|r| r.conv == Conv::Image) {
        let path = row
            .setting
            .and_then(|s| settings.get(s))
            .and_then(|v| <&str>::try_from(v).ok())
            .filter(|p| !p.is_empty());
        if let Some(path) = path {
            images::md5(PathBuf::from(path)).await?;
        }
    }
    Ok(())
}

/// Only the settings that change: the controller sends back what it has (the console port
/// among them), and a setting applied only while stopped is refused on a running VM even
/// when unchanged.
async fn configure(app: &App, node: &Node, settings: Settings, what: &str) -> Result<()> {
    let now = app.node_props(&node.path).await?;
    let changed: HashMap<&str, Variant<'_>> = settings
        .into_iter()
        .filter(|(k, v)| now.get(*k).is_none_or(|cur| **cur != *v))
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    node.vm
        .configure(changed)
        .await
        .map_err(ApiError::call(what.to_string()))
}

async fn create(
    State(app): State<App>,
    Path(project): Path<String>,
    Body(body): Body<Map<String, Value>>,
) -> Result<(StatusCode, Json<Value>)> {
    let project = app.project(&project)?;
    let id = match body.get("node_id") {
        None | Some(Value::Null) => Id::parse(&uuid::Uuid::new_v4().to_string())
            .map_err(|e| ApiError::Internal(e.to_string()))?,
        Some(Value::String(s)) => Id::parse(s)
            .map_err(|_| ApiError::BadRequest(format!("node_id '{s}' is not a UUID")))?,
        Some(v) => {
            return Err(ApiError::BadRequest(format!(
                "node_id must be a UUID, not {v}"
            )))
        }
    };
    let name = match body.get("name") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(ApiError::BadRequest("name must be a string".into())),
    };
    let mut settings = properties::to_settings(&body, &app.config.images)?;
    checksum_images(&settings).await?;
    let what = format!("create node {name}");
    match app.node(project, &id.to_string()).await {
        Ok(node) => {
            configure(&app, &node, settings, &what).await?;
            Ok((
                StatusCode::CREATED,
                Json(reply(&app, project, &node).await?),
            ))
        }
        Err(ApiError::NoNode(_)) => {
            settings.remove("Name");
            let mut all: HashMap<&str, Variant<'_>> = settings.into_iter().collect();
            all.insert("Id", Variant::from(id.to_string()));
            all.insert("Project", Variant::from(project.to_string()));
            let path = app
                .manager
                .create_vm(&name, all)
                .await
                .map_err(ApiError::call(what))?;
            let id = ids::vm_id(path.as_str()).unwrap_or(id);
            let node = app.node(project, &id.to_string()).await?;
            Ok((
                StatusCode::CREATED,
                Json(reply(&app, project, &node).await?),
            ))
        }
        Err(e) => Err(e),
    }
}

async fn read(
    State(app): State<App>,
    Path((project, node)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let project = app.project(&project)?;
    let node = app.node(project, &node).await?;
    Ok(Json(reply(&app, project, &node).await?))
}

async fn update(
    State(app): State<App>,
    Path((project, node)): Path<(String, String)>,
    Body(body): Body<Map<String, Value>>,
) -> Result<Json<Value>> {
    let project = app.project(&project)?;
    let node = app.node(project, &node).await?;
    let settings = properties::to_settings(&body, &app.config.images)?;
    checksum_images(&settings).await?;
    configure(&app, &node, settings, &format!("update node {}", node.id)).await?;
    Ok(Json(reply(&app, project, &node).await?))
}

async fn delete(
    State(app): State<App>,
    Path((project, node)): Path<(String, String)>,
) -> Result<StatusCode> {
    let project = app.project(&project)?;
    let node = app.node(project, &node).await?;
    let what = format!("delete node {}", node.id);
    node.vm
        .power_off()
        .await
        .map_err(ApiError::call(what.clone()))?;
    node.vm.delete().await.map_err(ApiError::call(what))?;
    Ok(StatusCode::NO_CONTENT)
}

/// One of the five calls that each is one method of the VM, answered once the notification
/// sockets were told the node's new status (as GNS3's compute does: the controller learns it
/// from them only).
macro_rules! action {
    ($name:ident, $method:ident, $verb:literal, $status:expr) => {
        async fn $name(
            State(app): State<App>,
            Path((project, node)): Path<(String, String)>,
        ) -> Result<StatusCode> {
            let project = app.project(&project)?;
            let node = app.node(project, &node).await?;
            node.vm
                .$method()
                .await
                .map_err(ApiError::call(format!(concat!($verb, " node {}"), node.id)))?;
            if let Some(status) = $status {
                app.events.wait_for(&node.path, status).await;
            }
            Ok(StatusCode::NO_CONTENT)
        }
    };
}

// Start resumes a paused VM too: GNS3 has no resume of its own (the GUI's resume is start).
action!(start, start, "start", Some("started"));
action!(stop, stop, "stop", Some("stopped"));
action!(suspend, suspend, "suspend", Some("suspended"));
action!(resume, resume, "resume", Some("started"));
action!(reload, reload, "reload", None::<&str>);

/// The daemon's telnet server has nothing to reset: each connection is fresh.
async fn console_reset(
    State(app): State<App>,
    Path((project, node)): Path<(String, String)>,
) -> Result<StatusCode> {
    let project = app.project(&project)?;
    app.node(project, &node).await?;
    Ok(StatusCode::NO_CONTENT)
}
