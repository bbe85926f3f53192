//! Links: each end of a GNS3 link is a NIO on a node's adapter, which is the daemon's UDP
//! tunnel on that adapter (AddUdpTunnel, RemoveUdpTunnel) and its suspension
//! (SetLinkSuspended). A PUT carries the whole NIO again: its `filters` replace the set ({}
//! clears it) and `suspend` is set both ways (GNS3 3.0.6's own compute ignores {} and false,
//! so a resumed link stays down there).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::Body;
use crate::app::{App, Node};
use crate::error::{ApiError, Result};
use crate::ids::Id;

pub fn routes() -> Router<App> {
    Router::new().route(
        "/projects/{project}/qemu/nodes/{node}/adapters/{adapter}/ports/{port}/nio",
        post(add).put(update).delete(remove),
    )
}

#[derive(Debug, Deserialize)]
pub struct Nio {
    #[serde(rename = "type")]
    kind: String,
    lport: u16,
    rhost: String,
    rport: u16,
    #[serde(default)]
    filters: Option<Map<String, Value>>,
    #[serde(default)]
    suspend: Option<bool>,
}

impl Nio {
    /// The NIO of a request's body: its type first, so that a TAP or Ethernet NIO is told
    /// it is not supported rather than that it lacks a UDP port.
    fn of(body: Map<String, Value>) -> Result<Nio> {
        let kind = body.get("type").and_then(Value::as_str).unwrap_or_default();
        decide(kind, None, false)?;
        serde_path_to_error::deserialize(Value::Object(body))
            .map_err(|e| ApiError::BadRequest(format!("the NIO: {e}")))
    }

    fn decide(&self) -> Result<bool> {
        decide(
            &self.kind,
            self.filters.as_ref(),
            self.suspend.unwrap_or(false),
        )
    }

    fn json(&self, suspended: bool) -> Value {
        json!({
            "type": self.kind, "lport": self.lport, "rhost": self.rhost, "rport": self.rport,
            "suspend": suspended, "filters": {},
        })
    }
}

/// Whether the link is to be suspended, or why the NIO cannot be had. The daemon has no
/// packet filters, so any filter that is on is refused, before anything changes; a filter
/// whose first value is 0 is off (the controller drops those itself), and
/// `frequency_drop [-1]` beside `suspend: true` is how the controller says "suspend".
pub fn decide(nio_type: &str, filters: Option<&Map<String, Value>>, suspend: bool) -> Result<bool> {
    if nio_type != "nio_udp" {
        return Err(ApiError::Conflict(format!(
            "NIO type '{nio_type}' is not supported: gns3-qemud links nodes by UDP tunnels \
             (nio_udp) only"
        )));
    }
    let mut on = Vec::new();
    for (name, values) in filters.into_iter().flatten() {
        let first = values.as_array().and_then(|v| v.first());
        let off = first.and_then(Value::as_f64) == Some(0.0) || first.is_none();
        let marker =
            suspend && name == "frequency_drop" && first.and_then(Value::as_f64) == Some(-1.0);
        if !off && !marker {
            on.push(name.as_str());
        }
    }
    if on.is_empty() {
        Ok(suspend)
    } else {
        Err(ApiError::Conflict(format!(
            "gns3-qemud has no packet filters: {} cannot be applied to this link. Remove the \
             filter; suspending the link is supported",
            on.join(", ")
        )))
    }
}

/// A port's path: project, node, adapter, port.
pub type PortPath = (String, String, String, String);

/// The node and adapter of a port's path (a NIO's, a capture's); only port 0 exists on a
/// QEMU adapter.
pub async fn target(
    app: &App,
    (project, node, adapter, port): PortPath,
) -> Result<(Id, Node, u32)> {
    let project = app.project(&project)?;
    let node = app.node(project, &node).await?;
    let adapter: u32 = adapter
        .parse()
        .map_err(|_| ApiError::NotFound(format!("adapter '{adapter}' is not a number")))?;
    if port != "0" {
        return Err(ApiError::NotFound(format!(
            "port {port} does not exist: a QEMU adapter has port 0 only"
        )));
    }
    Ok((project, node, adapter))
}

async fn plug(
    app: &App,
    project: Id,
    node: &Node,
    adapter: u32,
    nio: &Nio,
    suspended: bool,
) -> Result<()> {
    node.vm
        .add_udp_tunnel(adapter, nio.lport, &nio.rhost, nio.rport)
        .await
        .map_err(ApiError::call(format!("link adapter {adapter}")))?;
    app.port_used(project, nio.lport);
    if suspended {
        if let Err(e) = node.vm.set_link_suspended(adapter, true).await {
            // All or nothing: the tunnel just made goes again.
            let _ = node.vm.remove_udp_tunnel(adapter).await;
            return Err(ApiError::call(format!("suspend adapter {adapter}'s link"))(
                e,
            ));
        }
    }
    Ok(())
}

pub async fn add(
    State(app): State<App>,
    Path(path): Path<PortPath>,
    Body(nio): Body<Map<String, Value>>,
) -> Result<(StatusCode, Json<Value>)> {
    let nio = Nio::of(nio)?;
    let (project, node, adapter) = target(&app, path).await?;
    let suspended = nio.decide()?;
    plug(&app, project, &node, adapter, &nio, suspended).await?;
    Ok((StatusCode::CREATED, Json(nio.json(suspended))))
}

pub async fn update(
    State(app): State<App>,
    Path(path): Path<PortPath>,
    Body(nio): Body<Map<String, Value>>,
) -> Result<(StatusCode, Json<Value>)> {
    let nio = Nio::of(nio)?;
    let (project, node, adapter) = target(&app, path).await?;
    let suspended = nio.decide()?;
    let tunnels = node
        .vm
        .tunnels()
        .await
        .map_err(ApiError::call("read the node's tunnels"))?;
    let same = tunnels
        .iter()
        .any(|(a, l, h, r)| *a == adapter && *l == nio.lport && *h == nio.rhost && *r == nio.rport);
    if same {
        node.vm
            .set_link_suspended(adapter, suspended)
            .await
            .map_err(ApiError::call(format!("set adapter {adapter}'s link")))?;
    } else {
        plug(&app, project, &node, adapter, &nio, suspended).await?;
    }
    Ok((StatusCode::CREATED, Json(nio.json(suspended))))
}

pub async fn remove(State(app): State<App>, Path(path): Path<PortPath>) -> Result<StatusCode> {
    let (_, node, adapter) = target(&app, path).await?;
    node.vm
        .remove_udp_tunnel(adapter)
        .await
        .map_err(ApiError::call(format!("unlink adapter {adapter}")))?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn suspend_is_the_controllers_frequency_drop_and_is_set_both_ways() {
        let marker = filters(json!({"frequency_drop": [-1]}));
        assert!(decide("nio_udp", Some(&marker), true).unwrap());
        assert!(!decide("nio_udp", Some(&filters(json!({}))), false).unwrap());
        assert!(!decide("nio_udp", None, false).unwrap());
        // Without suspend, frequency_drop -1 is a filter like any other.
        assert!(decide("nio_udp", Some(&marker), false).is_err());
    }

    #[test]
    fn a_filter_that_is_on_is_refused_naming_it_and_one_that_is_off_is_not() {
        let e = decide(
            "nio_udp",
            Some(&filters(json!({"packet_loss": [50], "delay": [0, 0]}))),
            false,
        )
        .unwrap_err();
        assert_eq!(e.status(), StatusCode::CONFLICT);
        assert_eq!(
            e.to_string(),
            "gns3-qemud has no packet filters: packet_loss cannot be applied to this link. \
             Remove the filter; suspending the link is supported"
        );
        assert!(!decide("nio_udp", Some(&filters(json!({"corrupt": [0]}))), false).unwrap());
        let e = decide("nio_ethernet", None, false).unwrap_err();
        assert!(e.to_string().contains("nio_ethernet"), "{e}");
    }
}
