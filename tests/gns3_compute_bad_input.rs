//! Bad input on every route of gns3-qemud-compute, as a confused or hostile client sends it:
//! no or wrong credentials, bodies that are not JSON or of the wrong types, unknown and
//! malformed ids, image names that climb out of the image directory, a body past the limit.
//! Each gets the GNS3 error it should (a status, and JSON `{"message": …}` saying what is
//! wrong), the daemon's state and the image directory are as they were, and the compute
//! goes on serving. (The websockets without credentials: tests/gns3_compute_nodes.rs.)

mod common;

use common::*;
use serde_json::{json, Value};

const PROJECT: &str = "57cb2a43-6a1b-4a56-9c43-1d1e0e1c2f0a";
const NODE: &str = "8c428b23-dc77-4ca6-b724-ea8e4f23eff0";
const UNKNOWN: &str = "00000000-0000-4000-8000-000000000001";

/// A request of the walk: method, path (under /v3/compute), body.
type Request = (&'static str, String, Vec<u8>);

fn json_body(v: Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

#[tokio::test]
async fn bad_input_changes_nothing_and_the_compute_keeps_serving() {
    let (lab, _dir, compute) = compute::project_with_the_guest(PROJECT).await;
    let nodes = format!("/projects/{PROJECT}/qemu/nodes");
    let node = json!({"name": "n1", "node_id": NODE, "ram": 128, "adapters": 1,
        "kernel_image": "vmlinuz", "initrd": "initrd.gz", "console_type": "telnet"});
    let (status, body) = compute.call("POST", &nodes, Some(node));
    assert_eq!(status, 201, "{body}");

    let state = lab.dir.path().join("state");
    let before = (snapshot(&state), snapshot(&compute.images));
    let n = format!("{nodes}/{NODE}");
    let nio = format!("{n}/adapters/0/ports/0/nio");
    let unknown_project = format!("Project ID {UNKNOWN} doesn't exist");
    let unknown_node = format!("Node ID {UNKNOWN} doesn't exist");
    let not_allowed =
        |name: &str| format!("The image '{name}' is not allowed on this remote server: ");
    let udp = |lport: Value, rhost: &str| {
        json_body(json!({"type": "nio_udp", "lport": lport, "rhost": rhost, "rport": 1}))
    };
    let n2 = |key: &str, value: Value| json_body(json!({"name": "n2", key: value}));
    // Each request, and the start of the message it gets.
    let walk: Vec<(Request, u16, String)> = vec![
        (("POST", "/projects".into(), b"{".to_vec()), 422, "Failed to parse the request body as JSON".into()),
        (("POST", "/projects".into(), json_body(json!({"project_id": 5}))), 422,
            "Failed to deserialize the JSON body into the target type: project_id: invalid type: integer `5`".into()),
        (("POST", "/projects".into(), json_body(json!({"project_id": "x"}))), 422, "project_id 'x' is not a UUID".into()),
        (("POST", format!("/projects/{UNKNOWN}/close"), vec![]), 404, unknown_project.clone()),
        (("DELETE", format!("/projects/{UNKNOWN}"), vec![]), 404, unknown_project.clone()),
        (("POST", format!("/projects/{UNKNOWN}/ports/udp"), vec![]), 404, unknown_project.clone()),
        (("POST", "/projects/not-an-id/close".into(), vec![]), 404, "Project ID not-an-id doesn't exist".into()),
        (("POST", nodes.clone(), n2("ram", json!("lots"))), 422, "ram must be an integer, not \"lots\"".into()),
        (("POST", nodes.clone(), n2("adapters", json!(-1))), 422, "adapters must be an integer, not -1".into()),
        (("POST", nodes.clone(), n2("node_id", json!("x"))), 422, "node_id 'x' is not a UUID".into()),
        (("POST", nodes.clone(), n2("kernel_image", json!("../vmlinuz"))), 409, not_allowed("../vmlinuz")),
        (("POST", nodes.clone(), n2("kernel_image", json!("/etc/passwd"))), 409, not_allowed("/etc/passwd")),
        (("POST", nodes.clone(), n2("initrd", json!("a/initrd.gz"))), 409, not_allowed("a/initrd.gz")),
        (("POST", nodes.clone(), json_body(json!([1, 2]))), 422,
            "Failed to deserialize the JSON body into the target type: invalid type: sequence".into()),
        (("POST", format!("/projects/{UNKNOWN}/qemu/nodes"), n2("ram", json!(64))), 404, unknown_project.clone()),
        (("GET", format!("{nodes}/{UNKNOWN}"), vec![]), 404, unknown_node.clone()),
        (("PUT", format!("{nodes}/{UNKNOWN}"), json_body(json!({"ram": 64}))), 404, unknown_node.clone()),
        (("DELETE", format!("{nodes}/{UNKNOWN}"), vec![]), 404, unknown_node.clone()),
        (("DELETE", format!("{nodes}/not-an-id"), vec![]), 404, "Node ID not-an-id doesn't exist".into()),
        (("PUT", n.clone(), json_body(json!({"ram": "lots"}))), 422, "ram must be an integer, not \"lots\"".into()),
        (("PUT", n.clone(), json_body(json!({"ram": 0}))), 409,
            format!("Cannot update node {NODE}: Ram 0 MiB is out of range: it must be at least 1 MiB")),
        (("PUT", n.clone(), json_body(json!({"hda_disk_image": "../../etc/shadow"}))), 409, not_allowed("../../etc/shadow")),
        (("POST", format!("{nodes}/{UNKNOWN}/start"), vec![]), 404, unknown_node.clone()),
        (("POST", format!("{nodes}/{UNKNOWN}/stop"), vec![]), 404, unknown_node.clone()),
        (("POST", format!("{nodes}/{UNKNOWN}/suspend"), vec![]), 404, unknown_node.clone()),
        (("POST", format!("{nodes}/{UNKNOWN}/reload"), vec![]), 404, unknown_node.clone()),
        (("POST", format!("{nodes}/{UNKNOWN}/console/reset"), vec![]), 404, unknown_node.clone()),
        (("POST", format!("{n}/suspend"), vec![]), 409,
            format!("Cannot suspend node {NODE}: cannot suspend VM 'n1': it is stopped; start it first")),
        (("POST", nio.clone(), json_body(json!({"type": "nio_tap", "tap_device": "tap0"}))), 409,
            "NIO type 'nio_tap' is not supported: gns3-qemud links nodes by UDP tunnels (nio_udp) only".into()),
        (("POST", nio.clone(), udp(json!("x"), "127.0.0.1")), 422, "the NIO: lport: invalid type: string \"x\"".into()),
        (("POST", nio.clone(), udp(json!(70000), "127.0.0.1")), 422, "the NIO: lport: invalid value: integer `70000`".into()),
        (("POST", nio.clone(), udp(json!(1), "nowhere..")), 409,
            "Cannot link adapter 0: remote host 'nowhere..' is neither".into()),
        (("POST", format!("{n}/adapters/9/ports/0/nio"), udp(json!(1), "127.0.0.1")), 409,
            "Cannot link adapter 9: VM 'n1' has no adapter 9: it has 1 adapter".into()),
        (("POST", format!("{n}/adapters/0/ports/0/capture/start"), json_body(json!({"capture_file_name": 7}))), 422,
            "Failed to deserialize the JSON body into the target type: capture_file_name: invalid type".into()),
        (("GET", format!("{n}/adapters/0/ports/0/capture/stream"), vec![]), 409,
            "Cannot open adapter 0's capture: cannot capture VM 'n1': it is stopped; start it first".into()),
        (("POST", "/qemu/images/..".into(), b"x".to_vec()), 409, not_allowed("..")),
        (("POST", "/qemu/images/..%2Fescape".into(), b"x".to_vec()), 409, not_allowed("../escape")),
        (("POST", "/qemu/images/a%2Fb".into(), b"x".to_vec()), 409, not_allowed("a/b")),
        (("POST", "/qemu/images/.hidden".into(), b"x".to_vec()), 409, not_allowed(".hidden")),
        (("POST", "/qemu/images/x.md5sum".into(), b"x".to_vec()), 409, not_allowed("x.md5sum")),
        (("GET", "/no/such/route".into(), vec![]), 404, "/v3/compute/no/such/route is not a route of this compute".into()),
    ];
    for ((method, path, body), want, message) in &walk {
        for auth in [None, Some("Basic Z25zMzp3cm9uZw==")] {
            let (status, reply) = compute.raw(method, path, auth, body);
            assert_eq!(status, 401, "{method} {path} with {auth:?}: {reply}");
        }
        let (status, reply) = compute.raw(method, path, Some(compute::AUTH), body);
        let said = reply["message"].as_str().unwrap_or_default();
        assert!(
            status == *want && said.starts_with(message.as_str()),
            "{method} {path}: {status} {reply}, not {want} {message:?}"
        );
    }
    let too_large =
        "Request body too large: Failed to buffer the request body: length limit exceeded";
    for (method, path) in [("POST", nodes.as_str()), ("PUT", n.as_str())] {
        let (status, reply) = huge(&compute, method, path, None);
        assert_eq!(
            (status, &reply["message"]),
            (401, &json!("Not authenticated"))
        );
        let (status, reply) = huge(&compute, method, path, Some(compute::AUTH));
        assert_eq!(
            (status, &reply["message"]),
            (413, &json!(too_large)),
            "{method} {path}"
        );
    }
    let after = (snapshot(&state), snapshot(&compute.images));
    assert!(before == after, "the daemon's state or the images changed");
    assert_eq!(compute.call("GET", "/capabilities", None).0, 200);
    assert_eq!(compute.call("GET", &n, None).1["status"], "stopped");
}

/// `method path` with 2 MiB of JSON, sent while the reply is read: what the compute says
/// once it has read past its limit (or at once, without credentials).
fn huge(compute: &compute::Compute, method: &str, path: &str, auth: Option<&str>) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect((compute.host.as_str(), compute.port)).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let size = 2 << 20;
    let head = format!(
        "{method} /v3/compute{path} HTTP/1.1\r\nHost: {}\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n",
        compute.host
    );
    let mut writer = tcp.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut body = format!("{{\"name\": \"{}\"}}", "x".repeat(size - 12)).into_bytes();
        body.truncate(size);
        // The compute may stop reading once it has answered: a broken pipe is its right.
        let _ = writer
            .write_all(head.as_bytes())
            .and_then(|()| writer.write_all(&body));
    });
    let mut reply = Vec::new();
    let _ = tcp.read_to_end(&mut reply);
    let _ = sender.join();
    let reply = String::from_utf8_lossy(&reply);
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no status in {reply:?}"));
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    (
        status,
        serde_json::from_str(body).unwrap_or(Value::String(body.into())),
    )
}
