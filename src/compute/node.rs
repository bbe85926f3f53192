//! A node as GNS3 shows it: the JSON of one VM, built from its properties (the reply to
//! create and update, and the event of `node.updated` on the notification socket).

use std::collections::HashMap;

use serde_json::{json, Value};
use zbus::OwnedVariant;

use crate::app::App;
use crate::ids::Id;

/// A VM's properties, by name, as GetAll or GetManagedObjects gives them.
pub type Props = HashMap<String, OwnedVariant>;

/// GNS3's three states from the daemon's five: a VM on its way up is not started yet, one on
/// its way down is not stopped yet.
pub fn status(state: &str) -> &'static str {
    match state {
        "running" | "stopping" => "started",
        "paused" => "suspended",
        _ => "stopped",
    }
}

fn string(props: &Props, name: &str) -> String {
    props
        .get(name)
        .and_then(|v| <&str>::try_from(v).ok())
        .unwrap_or_default()
        .to_string()
}

/// The node JSON of the VM `id` of `project`.
pub fn json(_app: &App, project: Id, id: Id, props: &Props) -> Value {
    let console = props.get("ConsolePort").and_then(|v| u16::try_from(v).ok());
    json!({
        "project_id": project.to_string(),
        "node_id": id.to_string(),
        "name": string(props, "Name"),
        "status": status(&string(props, "State")),
        "console": console.filter(|p| *p != 0),
        "console_type": "telnet",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gns3_has_three_states() {
        assert_eq!(status("running"), "started");
        assert_eq!(status("stopping"), "started");
        assert_eq!(status("paused"), "suspended");
        assert_eq!(status("starting"), "stopped");
        assert_eq!(status("stopped"), "stopped");
    }
}
