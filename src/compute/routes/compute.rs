//! The compute as a whole: what the controller checks at every (re)connect (capabilities,
//! with the version it must match exactly), and the fixed or host-wide answers GUIs ask for.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::app::App;
use crate::host;

pub async fn capabilities(State(app): State<App>) -> Json<Value> {
    Json(json!({
        "version": app.config.gns3_version,
        // Only QEMU nodes run here; the controller only displays the list.
        "node_types": ["qemu"],
        "platform": "linux",
        "cpus": host::cpus(),
        "memory": host::memory_total(),
        "disk_size": host::disk_size(&app.config.images),
    }))
}

pub async fn version(State(app): State<App>) -> Json<Value> {
    Json(json!({ "version": app.config.gns3_version }))
}

pub async fn statistics(State(app): State<App>) -> Json<Value> {
    Json(host::statistics(&app.config.images))
}

pub async fn interfaces() -> Json<Value> {
    Json(host::interfaces())
}

pub async fn qemu_capabilities() -> Json<Value> {
    Json(json!({ "kvm": if host::kvm() { json!(["x86_64"]) } else { json!([]) } }))
}
