//! A node as GNS3 shows it: the JSON of one VM, built from its properties (the reply to
//! create, get and update, and the event of `node.updated` on the notification socket).
//! Every property of `properties::ROWS` that has a setting is echoed under its GNS3 name,
//! each image with its `*_md5sum` (from the cache beside it: none is computed here).

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value};
use zbus::OwnedVariant;

use crate::app::App;
use crate::ids::Id;
use crate::images;
use crate::properties::{self, Conv, ROWS};

/// A VM's properties, by name, as GetAll or GetManagedObjects gives them.
pub type Props = HashMap<String, OwnedVariant>;

/// Not a property of the contract: the daemon's CommandLine (a method), which the routes
/// that have it at hand add to the properties under this name, as a list of strings.
pub const COMMAND_LINE: &str = "CommandLine";

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

/// The VM's directory, as its command line shows it: the arguments' paths lead into a
/// directory named for the VM's id.
fn directory(args: &[String], id: Id) -> String {
    let simple = id.simple();
    let hyphenated = id.to_string();
    for arg in args {
        for part in arg.split([',', '=']) {
            let path = Path::new(part);
            if !path.is_absolute() {
                continue;
            }
            let mut dir = std::path::PathBuf::new();
            for c in path.components() {
                dir.push(c);
                let s = c.as_os_str().to_string_lossy();
                if s == simple || s == hyphenated {
                    return dir.display().to_string();
                }
            }
        }
    }
    String::new()
}

/// The node JSON of the VM `id` of `project`.
pub fn json(app: &App, project: Id, id: Id, props: &Props) -> Value {
    let dir = &app.config.images;
    let mut out = properties::from_settings(|name| props.get(name), dir);
    for row in ROWS.iter().filter(|r| r.conv == Conv::Image) {
        let path = row.setting.map(|s| string(props, s)).unwrap_or_default();
        let sum = (!path.is_empty())
            .then(|| images::cached_md5(Path::new(&path)))
            .flatten();
        out.insert(format!("{}_md5sum", row.gns3), json!(sum));
    }
    let args = props
        .get(COMMAND_LINE)
        .and_then(|v| v.try_clone().ok())
        .and_then(|v| <Vec<String>>::try_from(v).ok())
        .unwrap_or_default();
    let extra = json!({
        "project_id": project.to_string(),
        "node_id": id.to_string(),
        "name": string(props, "Name"),
        "status": status(&string(props, "State")),
        "console_type": "telnet",
        "aux": null,
        "aux_type": "none",
        "usage": "",
        "create_config_disk": false,
        "node_directory": directory(&args, id),
        "command_line": args.join(" "),
    });
    if let Value::Object(extra) = extra {
        out.extend(extra);
    }
    Value::Object(out)
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

    #[test]
    fn the_directory_is_the_one_named_for_the_vm() {
        let id = Id::parse("8c428b23-dc77-4ca6-b724-ea8e4f23eff4").unwrap();
        let args: Vec<String> = [
            "qemu-system-x86_64",
            "-m",
            "128",
            "-drive",
            "file=/var/lib/gns3-qemud/vms/8c428b23dc774ca6b724ea8e4f23eff4/hda.qcow2,if=ide",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            directory(&args, id),
            "/var/lib/gns3-qemud/vms/8c428b23dc774ca6b724ea8e4f23eff4"
        );
        assert_eq!(directory(&args[..3], id), "");
    }
}
