//! gns3-qemud-compute's QEMU nodes, as a GNS3 controller drives them (docs: the GNS3 compute
//! API record, §1 S5-S15): images uploaded after the 409 that names them, a node created,
//! started, suspended, resumed by start, reloaded, stopped, edited, created again (a project
//! re-opened), refused what the daemon lacks, and deleted. A real bus and daemon; the compute
//! runs as a member of gns3, as its unit's user does.

mod common;

use common::*;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(90);
const PROJECT: &str = "57cb2a43-6a1b-4a56-9c43-1d1e0e1c2f01";
const NODE: &str = "8c428b23-dc77-4ca6-b724-ea8e4f23eff4";

fn md5sum(path: &Path) -> String {
    let out = std::process::Command::new("md5sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn node_path(action: &str) -> String {
    format!("/projects/{PROJECT}/qemu/nodes/{NODE}{action}")
}

async fn vm_names(lab: &Lab) -> Vec<String> {
    let mut names: Vec<String> = lab
        .manager
        .list_vms()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, name, _, _)| name)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_node_from_upload_to_delete() {
    let lab = Lab::start().await;
    let (_dir, compute) = compute::Compute::for_lab(&lab);
    assert_eq!(vm_names(&lab).await, Vec::<String>::new());
    let mut notes = compute.notifications();
    let ping = notes
        .next(Duration::from_secs(5))
        .expect("a ping on connect");
    assert_eq!(ping["action"], "ping", "{ping}");
    let mut keys: Vec<&str> = ping["event"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "cpu_usage_percent",
            "disk_usage_percent",
            "memory_usage_percent"
        ]
    );
    refused_without_credentials(&compute);

    let (status, _) = compute.call(
        "POST",
        "/projects",
        Some(json!({"name": "lab", "project_id": PROJECT})),
    );
    assert_eq!(status, 201);

    // The template's body, database leftovers included (§1 S5).
    let mut create = json!({"builtin": false, "compute_id": "e5a0610c-f3e6-5ccd-8aa4-1cb54040d44d",
        "created_at": "2026-01-01T00:00:00", "qemu_path": "qemu-system-x86_64", "platform": "x86_64",
        "linked_clone": true, "ram": 128, "cpus": 1, "maxcpus": 1, "adapters": 1,
        "adapter_type": "e1000", "boot_priority": "c", "hda_disk_interface": "none",
        "initrd": "initrd.gz", "kernel_image": "vmlinuz",
        "kernel_command_line": "console=ttyS0 panic=-1 quiet",
        "replicate_network_connection_state": true, "create_config_disk": false, "tpm": false,
        "uefi": false, "on_close": "power_off", "cpu_throttling": 0, "process_priority": "normal",
        "name": "n1", "console_type": "telnet", "aux_type": "none", "node_id": NODE});
    let nodes = format!("/projects/{PROJECT}/qemu/nodes");
    let guest = guest();
    for image in ["initrd.gz", "vmlinuz"] {
        let (status, body) = compute.call("POST", &nodes, Some(create.clone()));
        assert_eq!(
            (status, body),
            (
                409,
                json!({"message": format!("The image '{image}' is missing"),
            "image": image, "exception": "ImageMissingError"})
            )
        );
        assert_eq!(compute.upload(image, &guest.join(image)), 204);
        let mode = std::fs::metadata(compute.images.join(image))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o644,
            "{image} is readable by the daemon's user"
        );
    }
    let mode = std::fs::metadata(&compute.images)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let (kernel_md5, initrd_md5) = (
        md5sum(&guest.join("vmlinuz")),
        md5sum(&guest.join("initrd.gz")),
    );

    let (status, images) = compute.call("GET", "/qemu/images", None);
    assert_eq!(status, 200);
    let size = |f: &str| std::fs::metadata(guest.join(f)).unwrap().len();
    assert_eq!(
        images,
        json!([
            {"filename": "initrd.gz", "path": "initrd.gz", "md5sum": initrd_md5, "filesize": size("initrd.gz")},
            {"filename": "vmlinuz", "path": "vmlinuz", "md5sum": kernel_md5, "filesize": size("vmlinuz")},
        ])
    );

    let (status, node) = compute.call("POST", &nodes, Some(create.clone()));
    assert_eq!(status, 201, "{node}");
    assert_eq!(vm_names(&lab).await, ["n1"]);
    for (k, v) in [
        ("node_id", json!(NODE)),
        ("project_id", json!(PROJECT)),
        ("name", json!("n1")),
        ("status", json!("stopped")),
        ("console_type", json!("telnet")),
        ("aux", Value::Null),
        ("aux_type", json!("none")),
        ("kernel_image", json!("vmlinuz")),
        ("initrd", json!("initrd.gz")),
        ("kernel_image_md5sum", json!(kernel_md5)),
        ("initrd_md5sum", json!(initrd_md5)),
        ("ram", json!(128)),
        ("adapters", json!(1)),
        ("adapter_type", json!("e1000")),
        ("platform", json!("x86_64")),
        ("custom_adapters", json!([])),
        ("uefi", json!(false)),
        ("on_close", json!("power_off")),
        ("hda_disk_interface", json!("ide")),
    ] {
        assert_eq!(node[k], v, "{k} in {node}");
    }
    let console = node["console"]
        .as_u64()
        .expect("the daemon picked a console port") as u16;
    assert!(
        node["mac_address"].as_str().is_some_and(|m| m.len() == 17),
        "{node}"
    );
    assert!(
        node["qemu_path"]
            .as_str()
            .is_some_and(|p| p.starts_with('/')),
        "{node}"
    );

    assert_eq!(
        announced(&mut notes),
        ["node.updated stopped"],
        "the new node"
    );
    assert_eq!(compute.call("POST", &node_path("/start"), None).0, 204);
    assert_eq!(announced(&mut notes), ["node.updated started"]);
    assert_eq!(
        compute.call("GET", &node_path(""), None).1["status"],
        "started"
    );
    let mut web = compute.web_console(PROJECT, NODE).unwrap();
    web.wait_for("GUEST-READY", BOOT).unwrap();
    // Typed into the web console, answered there.
    let out = web
        .run("echo web-$((6*7))", Duration::from_secs(30))
        .unwrap();
    assert_eq!(out.trim(), "web-42");
    let mut tty = Console::connect(console);
    let (_, node) = compute.call("GET", &node_path(""), None);
    let cmdline = node["command_line"].as_str().unwrap();
    assert!(
        cmdline.contains(&compute.images.join("vmlinuz").display().to_string()),
        "{cmdline}"
    );
    assert!(
        node["node_directory"]
            .as_str()
            .is_some_and(|d| d.ends_with(&NODE.replace('-', ""))),
        "{node}"
    );

    assert_eq!(compute.call("POST", &node_path("/suspend"), None).0, 204);
    assert_eq!(announced(&mut notes), ["node.updated suspended"]);
    assert_eq!(
        compute.call("GET", &node_path(""), None).1["status"],
        "suspended"
    );
    assert_eq!(compute.call("POST", &node_path("/start"), None).0, 204);
    assert_eq!(announced(&mut notes), ["node.updated started"]);
    assert_eq!(
        compute.call("GET", &node_path(""), None).1["status"],
        "started"
    );
    assert_eq!(
        compute.call("POST", &node_path("/console/reset"), None).0,
        204
    );
    assert_eq!(compute.call("POST", &node_path("/reload"), None).0, 204);
    tty.wait_for("GUEST-READY", BOOT).unwrap();
    notes.sent();
    assert_eq!(compute.call("POST", &node_path("/stop"), None).0, 204);
    assert_eq!(announced(&mut notes), ["node.updated stopped"]);
    web.wait_closed(Duration::from_secs(10))
        .expect("the web console closes when the VM stops");
    assert_eq!(
        compute.call("GET", &node_path(""), None).1["status"],
        "stopped"
    );
    assert_eq!(
        compute.call("POST", &node_path("/stop"), None).0,
        204,
        "stop of a stopped node"
    );

    // What the controller sends on an edit (the extra run's Z1).
    let (status, node) = compute.call(
        "PUT",
        &node_path(""),
        Some(json!({"ram": 160, "name": "n1",
        "console": console, "console_type": "telnet", "aux_type": "none"})),
    );
    assert_eq!(
        (status, node["ram"].clone(), node["console"].clone()),
        (200, json!(160), json!(console))
    );

    // A re-opened project: the same node, created again with its stored reply sent back.
    let mut stored = node.clone();
    stored["ram"] = json!(144);
    let (status, again) = compute.call("POST", &nodes, Some(stored));
    assert_eq!(status, 201, "{again}");
    assert_eq!(
        (again["node_id"].clone(), again["ram"].clone()),
        (json!(NODE), json!(144))
    );
    assert_eq!(vm_names(&lab).await, ["n1"]);

    let (status, body) = compute.call("PUT", &node_path(""), Some(json!({"aux_type": "telnet"})));
    assert_eq!(
        (status, body),
        (
            409,
            json!({"message":
        "aux_type \"telnet\" is not supported: the daemon has no auxiliary console"})
        )
    );
    create["create_config_disk"] = json!(true);
    create["node_id"] = json!("0d4fa1a6-4b8f-4f7e-9b76-0a3c1d1e2f30");
    let (status, body) = compute.call("POST", &nodes, Some(create));
    assert_eq!(
        (status, body),
        (
            409,
            json!({"message":
        "create_config_disk true is not supported: the daemon makes no config disk"})
        )
    );
    assert_eq!(vm_names(&lab).await, ["n1"]);

    notes.sent();
    assert_eq!(compute.call("DELETE", &node_path(""), None).0, 204);
    assert_eq!(announced(&mut notes), ["node.deleted stopped"]);
    assert_eq!(compute.call("GET", &node_path(""), None).0, 404);
    assert_eq!(vm_names(&lab).await, Vec::<String>::new());
}

/// What the compute announced since the last call, as "action status" with repeats of the
/// same folded (a VM on its way changes several properties), each checked to be this
/// node's, in this project.
fn announced(notes: &mut compute::Notifications) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for m in notes.sent() {
        assert_eq!(m["project_id"], PROJECT, "{m}");
        assert_eq!(m["event"]["project_id"], PROJECT, "{m}");
        assert_eq!(m["event"]["node_id"], NODE, "{m}");
        let said = format!(
            "{} {}",
            m["action"].as_str().unwrap(),
            m["event"]["status"].as_str().unwrap()
        );
        if seen.last() != Some(&said) {
            seen.push(said);
        }
    }
    seen
}

/// A websocket without the credentials, or with wrong ones: accepted, told why in GNS3's
/// words, and closed with 1008; an HTTP request without them is refused with 401.
fn refused_without_credentials(compute: &compute::Compute) {
    let wrong = "Basic Z25zMzp3cm9uZw=="; // gns3:wrong
    for path in [
        "/notifications/ws".to_string(),
        format!("/projects/{PROJECT}/qemu/nodes/{NODE}/console/ws"),
    ] {
        for auth in [None, Some(wrong)] {
            let mut ws = compute.websocket(&path, auth).unwrap();
            let said = ws.read().unwrap();
            assert_eq!(
                serde_json::from_str::<Value>(said.to_text().unwrap()).unwrap(),
                json!({"action": "log.error", "event": {"message":
                "Could not authenticate while connecting to compute WebSocket: \
                 Could not validate credentials"}}),
                "{path} {auth:?}"
            );
            match ws.read().unwrap() {
                tungstenite::Message::Close(Some(c)) => assert_eq!(u16::from(c.code), 1008),
                other => panic!("{path}: {other:?}, not a close"),
            }
        }
    }
}
