//! Projects: the controller opens one here with its first node on this compute, closes it
//! and deletes it. A project is the VMs whose `Project` is its id; the compute only keeps
//! which projects are open (`App`), and rebuilds that from the daemon at start.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use futures_util::future::join_all;
use serde::Deserialize;
use serde_json::{json, Value};

use gns3_qemuctl::proxies::VmProxy;

use super::Body;
use crate::app::App;
use crate::error::{ApiError, Result};
use crate::ids::Id;

#[derive(Deserialize)]
pub struct NewProject {
    name: Option<String>,
    project_id: String,
    variables: Option<Value>,
}

fn project_json(app: &App, id: Id, name: Option<&str>, variables: Option<&Value>) -> Value {
    json!({
        "name": name,
        "project_id": id.to_string(),
        "variables": variables,
        // Every VM file lives under the daemon's state dir, which the controller never reads.
        "path": app.config.images.parent().map(|p| p.display().to_string()),
    })
}

pub async fn create(
    State(app): State<App>,
    Body(p): Body<NewProject>,
) -> Result<(StatusCode, Json<Value>)> {
    let id = Id::parse(&p.project_id).map_err(|_| {
        ApiError::BadRequest(format!("project_id '{}' is not a UUID", p.project_id))
    })?;
    app.open_project(id);
    Ok((
        StatusCode::CREATED,
        Json(project_json(
            &app,
            id,
            p.name.as_deref(),
            p.variables.as_ref(),
        )),
    ))
}

pub async fn get(State(app): State<App>, Path(project): Path<String>) -> Result<Json<Value>> {
    let id = app.project(&project)?;
    Ok(Json(project_json(&app, id, None, None)))
}

/// Project variables: taken and echoed; the daemon's VMs have no use for them.
pub async fn update(
    State(app): State<App>,
    Path(project): Path<String>,
    Body(body): Body<Value>,
) -> Result<Json<Value>> {
    let id = app.project(&project)?;
    Ok(Json(project_json(
        &app,
        id,
        body.get("name").and_then(Value::as_str),
        body.get("variables"),
    )))
}

/// The VMs of the project, as proxies.
async fn vms(app: &App, project: Id) -> Result<Vec<VmProxy<'static>>> {
    let mut proxies = Vec::new();
    for (path, _) in app.project_vms(project).await? {
        proxies.push(app.vm(path).await?);
    }
    Ok(proxies)
}

/// Each failure of calls made to every VM at once, as one error naming them all.
fn all_ok(what: &str, results: Vec<zbus::Result<()>>) -> Result<()> {
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err())
        .map(|e| ApiError::call(what)(e).to_string())
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Conflict(failures.join("; ")))
    }
}

/// Stops every node (as each one's OnStop, GNS3's on_close, says) and closes the project.
/// The VMs stay, disks and all: the controller re-opens a project with the same node ids.
pub async fn close(State(app): State<App>, Path(project): Path<String>) -> Result<StatusCode> {
    let id = app.project(&project)?;
    let vms = vms(&app, id).await?;
    all_ok(
        "stop a node of the closed project",
        join_all(vms.iter().map(|vm| vm.stop())).await,
    )?;
    app.release_ports(id).await;
    app.close_project(id);
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes every VM of the project (powered off first), then forgets the project.
pub async fn delete(State(app): State<App>, Path(project): Path<String>) -> Result<StatusCode> {
    let id = app.project(&project)?;
    let vms = vms(&app, id).await?;
    all_ok(
        "power off a node of the deleted project",
        join_all(vms.iter().map(|vm| vm.power_off())).await,
    )?;
    all_ok(
        "delete a node of the deleted project",
        join_all(vms.iter().map(|vm| vm.delete())).await,
    )?;
    app.release_ports(id).await;
    app.close_project(id);
    Ok(StatusCode::NO_CONTENT)
}

/// A UDP port for one end of a link, held by the daemon until a tunnel uses it.
pub async fn udp_port(
    State(app): State<App>,
    Path(project): Path<String>,
) -> Result<(StatusCode, Json<Value>)> {
    let id = app.project(&project)?;
    let port = app
        .manager
        .allocate_udp_port()
        .await
        .map_err(ApiError::call("allocate a UDP port"))?;
    app.hold_port(id, port);
    Ok((StatusCode::CREATED, Json(json!({ "udp_port": port }))))
}
