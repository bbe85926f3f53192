//! The GNS3 controller harness (tests/common/gns3.rs) against a real gns3-server 3.0.6,
//! without our compute: what the compute's tests rely on when they drive it.
//!
//! One controller for the whole file (it takes seconds to start): one test, in steps.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::gns3::{self, Controller};
use serde_json::{json, Value};

#[test]
fn the_controller_harness_drives_a_real_gns3_controller() {
    let bin = gns3::gns3_server();
    let out = Command::new(&bin).arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3.0.6");

    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let c = Controller::start(dir.path(), "gns3", "harness-pw");
    eprintln!("controller up in {:.1} s", started.elapsed().as_secs_f64());

    version_and_login(&c);
    unreachable_compute(&c);
    compute_of_another_version(&c);
    image_upload(&c);
    consoles_and_captures_of_what_does_not_exist(&c);
}

fn version_and_login(c: &Controller) {
    let (status, version) = c.get("/v3/version");
    assert_eq!(status, 200);
    assert_eq!(version["version"], "3.0.6", "{version}");
    assert_eq!(version["local"], false, "{version}");

    let (status, token) = c.login("admin", "admin");
    assert_eq!(status, 200, "{token}");
    assert_eq!(token["token_type"], "bearer", "{token}");
    assert!(token["access_token"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));

    let (status, body) = c.login("admin", "not-the-password");
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body["message"], "Authentication was unsuccessful.",
        "{body}"
    );

    // Without the token, the controller refuses; with it, the administrator sees no compute
    // but its own ("local").
    let anonymous = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
        .get(format!("{}/v3/computes", c.url))
        .call()
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let (status, computes) = c.get("/v3/computes");
    assert_eq!(status, 200, "{computes}");
    assert_eq!(
        computes,
        json!([]),
        "the REST list shows only registered computes"
    );
}

/// Nothing listens there: the controller says so, and keeps the row until it is removed.
fn unreachable_compute(c: &Controller) {
    let mut notifications = c.notifications().unwrap();
    let port = common::free_port();
    let e = c
        .add_compute("127.0.0.1", port, "gns3", "pw")
        .expect_err("a compute where nothing listens");
    assert_eq!(e.status, 409, "{e:?}");
    assert_eq!(
        e.message,
        format!(
            "Cannot connect to host 127.0.0.1:{port} ssl:default \
             [Connect call failed ('127.0.0.1', {port})]"
        )
    );
    let id = e.compute_id.expect("the failed compute's row");
    // The controller tells its clients of the new compute, not connected.
    let created = notifications
        .wait_for(
            &format!("\"compute_id\": \"{id}\""),
            Duration::from_secs(10),
        )
        .unwrap();
    // The event that names it (the local compute's come before).
    let event = created.rsplit(r#"{"action": "#).next().unwrap();
    assert!(event.starts_with(r#""compute.created""#), "{created}");
    let rest = notifications
        .wait_for("}}", Duration::from_secs(10))
        .unwrap();
    assert!(rest.contains(r#""connected": false"#), "{created}{rest}");
    let (status, row) = c.get(&format!("/v3/computes/{id}"));
    assert_eq!(status, 200, "{row}");
    assert_eq!(
        (&row["host"], &row["port"]),
        (&json!("127.0.0.1"), &json!(port))
    );
    assert_eq!(
        c.compute_at("127.0.0.1", port).as_deref(),
        Some(id.as_str())
    );

    c.remove_compute(&id);
    let (status, _) = c.get(&format!("/v3/computes/{id}"));
    assert_eq!(status, 404);
    assert_eq!(c.compute_at("127.0.0.1", port), None);
}

/// A compute of 3.0.5: the controller refuses it at registration (spec §2.3), and
/// add_compute finds the row it left.
fn compute_of_another_version(c: &Controller) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let body = r#"{"version":"3.0.5"}"#;
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let e = c
        .add_compute("127.0.0.1", port, "gns3", "pw")
        .expect_err("a compute of 3.0.5");
    assert_eq!(e.status, 409, "{e:?}");
    assert_eq!(
        e.message,
        format!(
            "GNS3 controller version 3.0.6 is not the same as compute \
             gns3-qemud 127.0.0.1:{port} version 3.0.5"
        )
    );
    let id = e.compute_id.expect("the refused compute's row");
    c.remove_compute(&id);
    assert_eq!(c.compute_at("127.0.0.1", port), None);
}

fn image_upload(c: &Controller) {
    let guest = common::guest();
    let (status, before) = c.get("/v3/images");
    assert_eq!((status, &before), (200, &json!([])));
    for name in ["vmlinuz", "initrd.gz"] {
        let image = c.upload_image(name, &guest.join(name));
        assert_eq!(image["filename"], name, "{image}");
        assert_eq!(image["image_type"], "qemu", "{image}");
        assert_eq!(image["checksum"], md5(&guest.join(name)), "{image}");
    }
    let (status, images) = c.get("/v3/images");
    assert_eq!(status, 200);
    let mut listed: Vec<(String, String, u64)> = images
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["filename"].as_str().unwrap().to_string(),
                i["checksum"].as_str().unwrap().to_string(),
                i["image_size"].as_u64().unwrap(),
            )
        })
        .collect();
    listed.sort();
    let want: Vec<(String, String, u64)> = ["initrd.gz", "vmlinuz"]
        .iter()
        .map(|n| {
            let p = guest.join(n);
            (n.to_string(), md5(&p), std::fs::metadata(&p).unwrap().len())
        })
        .collect();
    assert_eq!(listed, want, "{images}");
}

/// The web console and the capture stream reach the controller's routes: with no node or
/// link behind them (there is no compute here), the controller has nothing to give.
fn consoles_and_captures_of_what_does_not_exist(c: &Controller) {
    let (status, project) = c.post("/v3/projects", &json!({"name": "harness"}));
    assert_eq!(status, 201, "{project}");
    let p = project["project_id"].as_str().unwrap();
    let nobody = "00000000-0000-4000-8000-000000000001";

    // GNS3 accepts the upgrade first, then fails to find the node and drops the connection
    // without a word (its error handler itself fails on a websocket).
    let mut console = c.web_console(p, nobody).unwrap();
    assert_eq!(
        console.wait_closed(Duration::from_secs(10)),
        Ok(String::new())
    );
    match c.capture_stream(p, nobody) {
        Ok(_) => panic!("a capture of no link streamed"),
        Err((status, body)) => {
            assert_eq!(status, 404, "{body}");
            assert_eq!(
                body["message"],
                Value::String(format!("Link ID {nobody} doesn't exist")),
                "{body}"
            );
        }
    }
    let (status, body) = c.delete(&format!("/v3/projects/{p}"));
    assert_eq!(status, 204, "{body}");
}

fn md5(path: &Path) -> String {
    let out = Command::new("md5sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}
