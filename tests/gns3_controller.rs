//! A lab as a GNS3 user runs it, through the real GNS3 controller (gns3-server 3.0.6) with
//! gns3-qemud-compute as its compute: registered, a project with two QEMU nodes of the test
//! guest (the controller uploads the images after the compute's 409), a link, both started
//! and read on the telnet console and on the controller's web console, a ping across, the
//! link captured through the controller and read by tshark, the compute restarted under
//! the running lab (it finds everything again in the daemon), the link suspended and resumed,
//! a packet filter refused, a node suspended, resumed and reloaded, both stopped, one deleted,
//! the project closed and deleted. At each step the controller's view of every node's status
//! is the daemon's, and the daemon keeps no VM of the project at the end.
//!
//! One controller and one lab for the file (each takes seconds to start): one test, in steps.

mod common;

use std::io::Read;
use std::time::Duration;

use common::gns3::Controller;
use common::*;
use serde_json::json;

const BOOT: Duration = Duration::from_secs(120);
const SHORTLY: Duration = Duration::from_secs(10);
/// The guests' addresses on the link.
const N1_IP: &str = "10.0.12.1";
const N2_IP: &str = "10.0.12.2";

/// The daemon, the controller in front of it (through the compute) and the project.
struct Session {
    lab: Lab,
    c: Controller,
    project: String,
}

impl Session {
    fn nodes(&self, path: &str) -> String {
        format!("/v3/projects/{}/nodes{path}", self.project)
    }

    fn link(&self, link: &str) -> String {
        format!("/v3/projects/{}/links/{link}", self.project)
    }

    fn act(&self, node: &str, action: &str) {
        self.c.node_action(&self.project, node, action);
    }

    /// Waits until the controller shows each of `nodes` as its status, then checks the daemon
    /// says the same of every VM of the project, and has no other.
    async fn agree(&self, nodes: &[(&str, &str)]) {
        for (node, want) in nodes {
            assert!(
                self.c.wait_node_status(&self.project, node, want, SHORTLY),
                "the controller shows {node} {}, not {want}",
                self.c.node_status(&self.project, node)
            );
        }
        let mut daemon: Vec<(String, String)> = Vec::new();
        for (id, _, state, path) in self.lab.manager.list_vms().await.unwrap() {
            if vm(&self.lab.conn, &path).await.project().await.unwrap() == self.project {
                let status = match state.as_str() {
                    "running" => "started",
                    "paused" => "suspended",
                    "stopped" => "stopped",
                    other => panic!("{id} is {other} in the daemon"),
                };
                daemon.push((id, status.to_string()));
            }
        }
        daemon.sort();
        let mut want: Vec<(String, String)> = nodes
            .iter()
            // The daemon's ids are the node ids without their dashes.
            .map(|(n, s)| (n.replace('-', ""), s.to_string()))
            .collect();
        want.sort();
        assert_eq!(daemon, want, "the daemon's VMs of the project");
    }
}

#[tokio::test]
async fn a_lab_through_the_gns3_controller() {
    let lab = Lab::start().await;
    let (_compute_dir, mut compute) = compute::Compute::for_lab(&lab);
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), compute::USER, compute::PASSWORD);
    let cid = c
        .add_compute("127.0.0.1", compute.port, compute::USER, compute::PASSWORD)
        .unwrap_or_else(|e| panic!("the controller refused the compute: {e:?}"));

    let project = c.project_with_the_guest("lab");
    let l = Session { lab, c, project };

    // Two nodes; the first makes the controller upload both images (§7).
    let mut ids = Vec::new();
    for name in ["n1", "n2"] {
        let body = l.c.guest_node(&l.project, &cid, name);
        assert_eq!(body["compute_id"], cid.as_str(), "{body}");
        ids.push(body["node_id"].as_str().unwrap().to_string());
    }
    let mut uploaded: Vec<String> = std::fs::read_dir(&compute.images)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.ends_with(".md5sum"))
        .collect();
    uploaded.sort();
    assert_eq!(
        uploaded,
        ["initrd.gz", "vmlinuz"],
        "the controller's upload"
    );
    let (n1, n2) = (ids[0].as_str(), ids[1].as_str());
    l.agree(&[(n1, "stopped"), (n2, "stopped")]).await;

    let link = l.c.link(&l.project, n1, n2);

    for n in [n1, n2] {
        l.act(n, "start");
    }
    l.agree(&[(n1, "started"), (n2, "started")]).await;
    let (_, node1) = l.c.get(&l.nodes(&format!("/{n1}")));
    assert_eq!(node1["console_host"], "127.0.0.1", "{node1}");
    let mut tty1 = Console::connect(node1["console"].as_u64().unwrap() as u16);
    let mut web2 = l.c.web_console(&l.project, n2).unwrap();
    tty1.addressed(N1_IP);
    web2.addressed(N2_IP);
    assert!(web2.comes_to_reach(N1_IP), "n2 pings n1 across the link");

    capture(&l, &link, &mut web2);

    // A restart of the compute loses nothing: it finds its projects and nodes in the
    // daemon, the controller connects again, and the lab was never down.
    // (The later node steps need its notification socket, which the controller opens
    // again when it reconnects.)
    let before = compute.child.id();
    compute.restart();
    assert_ne!(compute.child.id(), before);
    let images = format!("/v3/computes/{cid}/qemu/images");
    let listed = (0..300).find_map(|_| match l.c.get(&images) {
        (200, list) => Some(list),
        _ => {
            std::thread::sleep(Duration::from_millis(100));
            None
        }
    });
    let names: Vec<&str> = listed
        .as_ref()
        .and_then(|l| l.as_array())
        .map(|l| l.iter().filter_map(|i| i["filename"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        ["initrd.gz", "vmlinuz"],
        "through the restarted compute"
    );
    assert!(tty1.reaches(N2_IP), "the lab ran on");
    l.agree(&[(n1, "started"), (n2, "started")]).await;
    let (_, again) = l.c.get(&l.nodes(&format!("/{n1}")));
    assert_eq!(again["console"], node1["console"], "{again}");
    // The web console went with the compute; a new one reaches the same shell.
    let mut web2 = l.c.web_console(&l.project, n2).unwrap();
    assert!(web2.reaches(N1_IP), "the web console, opened again");

    // Suspended, the link carries nothing; resumed, it carries again (§5.4 done right).
    let (status, body) = l.c.put(&l.link(&link), &json!({"suspend": true}));
    assert_eq!(status, 200, "{body}");
    assert!(!web2.reaches(N1_IP), "a suspended link carries no ping");
    let (status, body) = l.c.put(&l.link(&link), &json!({"suspend": false}));
    assert_eq!(status, 200, "{body}");
    assert!(web2.comes_to_reach(N1_IP), "the resumed link carries again");

    // The daemon has no packet filters: the controller passes the compute's 409 on.
    let (status, body) =
        l.c.put(&l.link(&link), &json!({"filters": {"packet_loss": [50]}}));
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("gns3-qemud has no packet filters: packet_loss cannot be applied"),
        "{body}"
    );
    assert!(web2.reaches(N1_IP), "the link as it was");

    l.act(n1, "suspend");
    l.agree(&[(n1, "suspended"), (n2, "started")]).await;
    assert!(!web2.reaches(N1_IP), "a suspended node answers nothing");
    // GNS3 has no resume: start resumes (§1 S11b).
    l.act(n1, "start");
    l.agree(&[(n1, "started"), (n2, "started")]).await;
    assert!(web2.comes_to_reach(N1_IP), "the resumed node answers");
    l.act(n1, "reload");
    tty1.wait_for("GUEST-READY", BOOT).unwrap();
    l.agree(&[(n1, "started"), (n2, "started")]).await;

    for n in [n1, n2] {
        l.act(n, "stop");
    }
    l.agree(&[(n1, "stopped"), (n2, "stopped")]).await;
    web2.wait_closed(SHORTLY)
        .expect("the web console closes when its node stops");

    let (status, body) = l.c.delete(&l.nodes(&format!("/{n2}")));
    assert_eq!(status, 204, "{body}");
    l.agree(&[(n1, "stopped")]).await;

    let (status, body) =
        l.c.post(&format!("/v3/projects/{}/close", l.project), &json!({}));
    assert_eq!(status, 204, "{body}");
    let (status, body) = l.c.delete(&format!("/v3/projects/{}", l.project));
    assert_eq!(status, 204, "{body}");
    l.agree(&[]).await;
    assert_eq!(l.lab.manager.list_vms().await.unwrap(), []);
    l.c.remove_compute(&cid);
}

/// The link captured through the controller while n2 pings n1: a libpcap stream that ends
/// when the capture stops, whose echo requests tshark reads.
fn capture(l: &Session, link: &str, web2: &mut Console) {
    let (status, body) =
        l.c.post(&format!("{}/capture/start", l.link(link)), &json!({}));
    assert_eq!(status, 201, "{body}");
    let mut stream =
        l.c.capture_stream(&l.project, link)
            .unwrap_or_else(|e| panic!("the capture stream: {e:?}"));
    let reader = std::thread::spawn(move || {
        let mut pcap = Vec::new();
        stream.read_to_end(&mut pcap).map(|_| pcap)
    });
    assert!(web2.reaches(N1_IP));
    let (status, body) =
        l.c.post(&format!("{}/capture/stop", l.link(link)), &json!({}));
    assert_eq!(status, 204, "{body}");
    let pcap = reader
        .join()
        .unwrap()
        .expect("the stream ends with the capture");
    assert_eq!(&pcap[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "a libpcap file");
    let requests = tshark(&pcap, "icmp.type == 8");
    assert!(
        requests.len() >= 3 && requests.iter().all(|r| r == &format!("{N2_IP}>{N1_IP}")),
        "n2's echo requests to n1: {requests:?}"
    );
}

/// `src>dst` of each IP packet of `pcap` that `filter` selects.
fn tshark(pcap: &[u8], filter: &str) -> Vec<String> {
    let mut tshark = std::process::Command::new("tshark")
        .args(["-r", "-", "-Y", filter, "-T", "fields", "-E", "separator=>"])
        .args(["-e", "ip.src", "-e", "ip.dst"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("tshark (package tshark)");
    std::io::Write::write_all(&mut tshark.stdin.take().unwrap(), pcap).unwrap();
    let out = tshark.wait_with_output().unwrap();
    assert!(out.status.success(), "tshark: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}
