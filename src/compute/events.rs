//! The daemon's signals as GNS3's notifications. One subscription serves the whole compute:
//! a VM's change becomes `node.updated` with the node's JSON when that JSON changed (a VM
//! on its way up changes several properties, the node only once), its removal becomes
//! `node.deleted`, and every notification socket gets the same messages. The status each
//! node was last announced with is kept, because GNS3's compute announces a start before
//! it answers the call (the controller learns a node's status only from the socket), and
//! the action routes wait for it.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use gns3_qemuctl::events::{self, Event};
use serde_json::{json, Value};
use tokio::sync::{broadcast, Notify};
use zbus::{MessageStream, OwnedObjectPath, OwnedVariant};

use crate::app::App;
use crate::ids::{self, Id};

/// Messages kept for a socket that is slow to send them: a lab's worth of starts at once.
const QUEUED: usize = 1024;
/// How long an action waits for its node's announcement before it answers anyway.
const ANNOUNCED_WITHIN: Duration = Duration::from_secs(5);

pub struct Events {
    sockets: broadcast::Sender<String>,
    /// Each node's last announced JSON, by its VM's path.
    announced: Mutex<HashMap<OwnedObjectPath, Value>>,
    /// Each VM's `Project`, from its Added signal (or asked once, for a VM older than the
    /// compute): a change of a VM of no open project costs no call.
    projects: Mutex<HashMap<OwnedObjectPath, String>>,
    changed: Notify,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            sockets: broadcast::channel(QUEUED).0,
            announced: Mutex::default(),
            projects: Mutex::default(),
            changed: Notify::new(),
        }
    }
}

impl Events {
    /// What a new notification socket will send from now on.
    pub fn listen(&self) -> broadcast::Receiver<String> {
        self.sockets.subscribe()
    }

    fn announced(&self) -> MutexGuard<'_, HashMap<OwnedObjectPath, Value>> {
        self.announced.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn projects(&self) -> MutexGuard<'_, HashMap<OwnedObjectPath, String>> {
        self.projects.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the VM's `Project` if `properties` (of a signal) name it.
    fn note_project(&self, path: &OwnedObjectPath, properties: &HashMap<String, OwnedVariant>) {
        if let Some(project) = properties
            .get("Project")
            .and_then(|v| <&str>::try_from(&**v).ok())
        {
            self.projects().insert(path.clone(), project.to_string());
        }
    }

    fn status_of(&self, path: &OwnedObjectPath) -> Option<String> {
        self.announced()
            .get(path)
            .and_then(|node| node["status"].as_str())
            .map(str::to_string)
    }

    /// Returns once the node at `path` was announced with `status`, at once when no socket
    /// listens, and after a few seconds if the announcement does not come.
    pub async fn wait_for(&self, path: &OwnedObjectPath, status: &str) {
        if self.sockets.receiver_count() == 0 {
            return;
        }
        let announced = async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if self.status_of(path).as_deref() == Some(status) {
                    return;
                }
                changed.await;
            }
        };
        if tokio::time::timeout(ANNOUNCED_WITHIN, announced)
            .await
            .is_err()
        {
            tracing::warn!("{path} was not announced {status} within {ANNOUNCED_WITHIN:?}");
        }
    }

    fn send(&self, action: &str, project: &str, node: &Value) {
        let message = json!({"action": action, "event": node, "project_id": project});
        // No socket listening is not an error: the controller connects when it will.
        let _ = self.sockets.send(message.to_string());
    }
}

/// Subscribes to the daemon's signals: before the compute serves, so that nothing it does
/// goes unannounced.
pub async fn subscribe(bus: &zbus::Connection) -> Result<MessageStream, String> {
    events::subscribe(bus).await.map_err(|e| e.to_string())
}

/// Announces the daemon's changes until the bus is gone; the reason it is.
pub async fn run(app: App, mut stream: MessageStream) -> String {
    loop {
        match events::next(&mut stream).await {
            Ok(
                Event::Added {
                    path,
                    properties: changed,
                }
                | Event::Changed { path, changed, .. },
            ) => {
                if let Ok(path) = OwnedObjectPath::try_from(path) {
                    app.events.note_project(&path, &changed);
                    updated(&app, path).await;
                }
            }
            Ok(Event::Removed { path }) => {
                if let Ok(path) = OwnedObjectPath::try_from(path) {
                    app.events.projects().remove(&path);
                    deleted(&app, &path);
                }
            }
            Err(e) => return e.to_string(),
        }
    }
}

/// The node's JSON now, if it is a node of a project open here.
async fn node(app: &App, path: &OwnedObjectPath) -> Option<(Id, Value)> {
    let id = ids::vm_id(path.as_str())?;
    let known = app.events.projects().get(path).cloned();
    let project = match known {
        Some(p) => p,
        None => {
            let p = app.vm(path.clone()).await.ok()?.project().await.ok()?;
            app.events.projects().insert(path.clone(), p.clone());
            p
        }
    };
    let project = Id::parse(&project).ok().filter(|p| app.is_open(*p))?;
    let props = match app.node_props(path).await {
        Ok(p) => p,
        // Gone meanwhile: its removal comes next.
        Err(e) => {
            tracing::debug!("{path} not announced: {e}");
            return None;
        }
    };
    Some((project, crate::node::json(app, project, id, &props)))
}

async fn updated(app: &App, path: OwnedObjectPath) {
    let Some((project, json)) = node(app, &path).await else {
        return;
    };
    let events = &app.events;
    if events.announced().get(&path) == Some(&json) {
        return;
    }
    events.send("node.updated", &project.to_string(), &json);
    events.announced().insert(path, json);
    events.changed.notify_waiters();
}

fn deleted(app: &App, path: &OwnedObjectPath) {
    let events = &app.events;
    let Some(json) = events.announced().remove(path) else {
        return;
    };
    let project = json["project_id"].as_str().unwrap_or_default().to_string();
    events.send("node.deleted", &project, &json);
    events.changed.notify_waiters();
}
