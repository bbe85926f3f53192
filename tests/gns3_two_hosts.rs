//! A lab across two hosts, as GNS3 users grow one: two network namespaces joined by a veth
//! pair stand for two machines, each with its bus, daemon and compute (the daemon's tunnels
//! on that host's address), and one GNS3 controller registered with both. A link between a
//! node on each carries a ping over the veth; the second host's node is reached through the
//! controller's web console; and a restart of that host's daemon (SIGTERM, as systemctl
//! restart sends it) leaves the lab running: the guests, the link and the controller's view.

mod common;

use std::fs::File;
use std::process::Command;
use std::time::Duration;

use common::gns3::Controller;
use common::*;

const SHORTLY: Duration = Duration::from_secs(10);
const HOST_A: &str = "10.99.0.1";
const HOST_B: &str = "10.99.0.2";
const N1_IP: &str = "10.0.13.1";
const N2_IP: &str = "10.0.13.2";

/// The two hosts: named network namespaces and the veth between them, removed on drop
/// (their processes keep them alive until they end).
struct Hosts {
    names: [String; 2],
    a: File,
    b: File,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Hosts {
    fn make() -> Hosts {
        let pid = std::process::id();
        let names = [format!("gq-a-{pid}"), format!("gq-b-{pid}")];
        let veth = [format!("gqa{pid}"), format!("gqb{pid}")];
        for ns in &names {
            ip(&["netns", "add", ns]);
        }
        let hosts = Hosts {
            a: File::open(format!("/run/netns/{}", names[0])).unwrap(),
            b: File::open(format!("/run/netns/{}", names[1])).unwrap(),
            names,
        };
        ip(&[
            "link", "add", &veth[0], "type", "veth", "peer", "name", &veth[1],
        ]);
        for ((ns, dev), addr) in hosts.names.iter().zip(&veth).zip([HOST_A, HOST_B]) {
            ip(&["link", "set", dev, "netns", ns]);
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        hosts
    }

    /// Moves the calling thread into `ns`: what it starts from now on lives on that host.
    fn enter(ns: &File) {
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A host's daemon (its tunnels on `addr`) and the compute in front of it, on `addr`.
async fn host(addr: &str) -> (Lab, tempfile::TempDir, compute::Compute) {
    let lab = Lab::with_config(&format!("udp_host = \"{addr}\"\n")).await;
    let dir = tempfile::Builder::new()
        .prefix("gns3-compute-")
        .tempdir()
        .unwrap();
    let compute = compute::Compute::start_on(&lab.bus.address, dir.path(), addr, &[]);
    (lab, dir, compute)
}

#[tokio::test]
async fn a_lab_across_two_hosts_outlives_a_daemon_restart() {
    // The controller is installed (pip, from PyPI) before the test leaves the host's
    // network: the namespaces reach nothing beyond each other.
    common::gns3::gns3_server();
    let hosts = Hosts::make();
    Hosts::enter(&hosts.b);
    let (mut lab_b, _dir_b, compute_b) = host(HOST_B).await;
    Hosts::enter(&hosts.a);
    let (lab_a, _dir_a, compute_a) = host(HOST_A).await;
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), compute::USER, compute::PASSWORD);
    let mut computes = Vec::new();
    for compute in [&compute_a, &compute_b] {
        let id = c
            .add_compute(
                &compute.host,
                compute.port,
                compute::USER,
                compute::PASSWORD,
            )
            .unwrap_or_else(|e| panic!("{}: {e:?}", compute.host));
        computes.push(id);
    }

    let project = c.project_with_the_guest("two hosts");
    let nodes = format!("/v3/projects/{project}/nodes");
    let ids: Vec<String> = ["n1", "n2"]
        .iter()
        .zip(&computes)
        .map(|(name, compute_id)| {
            let node = c.guest_node(&project, compute_id, name);
            node["node_id"].as_str().unwrap().to_string()
        })
        .collect();
    let (n1, n2) = (ids[0].as_str(), ids[1].as_str());
    c.link(&project, n1, n2);

    // Each end sends to the other host's address, from its own.
    let vm_b = vm(
        &lab_b.conn,
        &lab_b.manager.get_vm(&n2.replace('-', "")).await.unwrap(),
    )
    .await;
    let vm_a = vm(
        &lab_a.conn,
        &lab_a.manager.get_vm(&n1.replace('-', "")).await.unwrap(),
    )
    .await;
    let (tunnel_a, tunnel_b) = (vm_a.tunnels().await.unwrap(), vm_b.tunnels().await.unwrap());
    assert_eq!(
        (tunnel_a[0].2.as_str(), tunnel_b[0].2.as_str()),
        (HOST_B, HOST_A),
        "{tunnel_a:?} {tunnel_b:?}"
    );

    for n in [n1, n2] {
        c.node_action(&project, n, "start");
    }
    for n in [n1, n2] {
        assert!(c.wait_node_status(&project, n, "started", SHORTLY), "{n}");
    }
    let (_, node1) = c.get(&format!("{nodes}/{n1}"));
    assert_eq!(node1["console_host"], HOST_A, "{node1}");
    // Host A's consoles listen on its loopback, where the test is.
    let mut tty1 = Console::connect(node1["console"].as_u64().unwrap() as u16);
    let mut web2 = c.web_console(&project, n2).unwrap();
    tty1.addressed(N1_IP);
    web2.addressed(N2_IP);
    assert!(web2.comes_to_reach(N1_IP), "n2 pings n1 across the hosts");

    // Host B's daemon restarts; its guest and the link carry on meanwhile.
    let qemu_b = vm_b.pid().await.unwrap();
    let status = lab_b.daemon.terminate();
    assert_eq!(status.code(), Some(0), "{}", lab_b.daemon.log_text());
    assert!(pid_alive(qemu_b), "the guest outlives its daemon");
    assert!(
        tty1.reaches(N2_IP),
        "the link carries while host B's daemon is down"
    );
    Hosts::enter(&hosts.b);
    lab_b.daemon.restart(&lab_b.bus);
    Hosts::enter(&hosts.a);
    let conn_b = lab_b.daemon.connect().await;
    let vm_b = vm(
        &conn_b,
        &manager(&conn_b)
            .await
            .get_vm(&n2.replace('-', ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (vm_b.state().await.unwrap(), vm_b.pid().await.unwrap()),
        ("running".to_string(), qemu_b),
        "the restarted daemon found its guest"
    );
    assert!(tty1.reaches(N2_IP), "the link after the restart");
    assert_eq!(c.node_status(&project, n2), "started");
    assert_eq!(c.node_status(&project, n1), "started");
    let mut web2 = c.web_console(&project, n2).unwrap();
    let out = web2.run("echo host-b-$((40+2))", SHORTLY).unwrap();
    assert_eq!(out.trim(), "host-b-42");

    let (status, body) = c.delete(&format!("/v3/projects/{project}"));
    assert_eq!(status, 204, "{body}");
    assert_eq!(lab_a.manager.list_vms().await.unwrap(), []);
    assert_eq!(manager(&conn_b).await.list_vms().await.unwrap(), []);
    for id in &computes {
        c.remove_compute(id);
    }
}
