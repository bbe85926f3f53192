//! A GNS3 link's end on gns3-qemud-compute: the NIO routes drive the VM's UDP tunnel and
//! its suspension as the controller does (the GNS3 compute API record, §5): POST, PUT with
//! suspend (the controller's frequency_drop [-1] beside it) and back (filters {} and suspend
//! false both taken, unlike GNS3 3.0.6's own compute), a packet filter refused with nothing
//! changed, DELETE. Read back from the daemon's Tunnels and Links. A stopped VM: tunnels
//! are kept in its record, and no guest is needed for what is checked here.

mod common;

use common::*;
use serde_json::json;

const PROJECT: &str = "57cb2a43-6a1b-4a56-9c43-1d1e0e1c2f02";
const NODE: &str = "8c428b23-dc77-4ca6-b724-ea8e4f23eff5";

#[tokio::test]
async fn a_links_end_is_the_vms_tunnel_and_its_suspension() {
    let (lab, _dir, compute) = compute::project_with_the_guest(PROJECT).await;
    let node = json!({"name": "n1", "node_id": NODE, "ram": 128, "adapters": 2,
        "kernel_image": "vmlinuz", "initrd": "initrd.gz", "console_type": "telnet"});
    let nodes = format!("/projects/{PROJECT}/qemu/nodes");
    let (status, body) = compute.call("POST", &nodes, Some(node));
    assert_eq!(status, 201, "{body}");
    let vm = vm(&lab.conn, &lab.manager.get_vm(NODE).await.unwrap()).await;

    let (status, port) = compute.call("POST", &format!("/projects/{PROJECT}/ports/udp"), None);
    assert_eq!(status, 201);
    let lport = port["udp_port"].as_u64().unwrap() as u16;
    assert!(lab.daemon.udp_ports.contains(&lport), "{port}");
    let nio = format!("{nodes}/{NODE}/adapters/1/ports/0/nio");
    let end = |filters: serde_json::Value, suspend: bool| {
        json!({"type": "nio_udp", "lport": lport, "rhost": "127.0.0.1", "rport": 32001,
            "filters": filters, "suspend": suspend})
    };

    let (status, _) = compute.call("POST", &nio, Some(end(json!({}), false)));
    assert_eq!(status, 201);
    assert_eq!(
        vm.tunnels().await.unwrap(),
        [(1, lport, "127.0.0.1".to_string(), 32001)]
    );
    let suspended =
        |links: Vec<(u32, bool, bool)>| links.into_iter().find(|l| l.0 == 1).map(|l| l.2).unwrap();
    assert!(!suspended(vm.links().await.unwrap()));

    // Suspend, as the controller says it; then back, with filters {} and suspend false.
    let (status, _) = compute.call(
        "PUT",
        &nio,
        Some(end(json!({"frequency_drop": [-1]}), true)),
    );
    assert_eq!(status, 201);
    assert!(suspended(vm.links().await.unwrap()));
    let (status, _) = compute.call("PUT", &nio, Some(end(json!({}), false)));
    assert_eq!(status, 201);
    assert!(!suspended(vm.links().await.unwrap()));

    // A packet filter the daemon lacks: 409 naming it, and the link as it was.
    let (status, body) = compute.call("PUT", &nio, Some(end(json!({"packet_loss": [50]}), false)));
    assert_eq!(status, 409);
    assert_eq!(
        body["message"],
        "gns3-qemud has no packet filters: packet_loss cannot be applied to this link. \
         Remove the filter; suspending the link is supported"
    );
    assert_eq!(vm.tunnels().await.unwrap().len(), 1);
    assert!(!suspended(vm.links().await.unwrap()));

    // Port 1 of a QEMU adapter, and an adapter that is not a number, do not exist.
    let wrong = format!("{nodes}/{NODE}/adapters/1/ports/1/nio");
    assert_eq!(compute.call("DELETE", &wrong, None).0, 404);
    let wrong = format!("{nodes}/{NODE}/adapters/x/ports/0/nio");
    assert_eq!(compute.call("DELETE", &wrong, None).0, 404);

    assert_eq!(compute.call("DELETE", &nio, None).0, 204);
    assert_eq!(vm.tunnels().await.unwrap(), []);
    assert_eq!(
        compute
            .call("DELETE", &format!("/projects/{PROJECT}"), None)
            .0,
        204
    );
    assert_eq!(lab.manager.list_vms().await.unwrap(), []);
}

/// A capture of a link's end through the compute, as the controller takes it (§6): started
/// with GNS3's body, its live stream followed until the capture stops, read by tshark; the
/// frames are the guest's ARP requests for its peer, which the test's end of the tunnel
/// receives too.
#[tokio::test]
async fn a_capture_streams_the_guests_frames_until_it_stops() {
    const PROJECT: &str = "57cb2a43-6a1b-4a56-9c43-1d1e0e1c2f03";
    const NODE: &str = "8c428b23-dc77-4ca6-b724-ea8e4f23eff6";
    let (lab, _dir, compute) = compute::project_with_the_guest(PROJECT).await;
    let node = json!({"name": "n1", "node_id": NODE, "ram": 128, "adapters": 1,
        "kernel_image": "vmlinuz", "initrd": "initrd.gz",
        "kernel_command_line": "console=ttyS0 panic=-1 quiet", "console_type": "telnet"});
    let nodes = format!("/projects/{PROJECT}/qemu/nodes");
    let (status, body) = compute.call("POST", &nodes, Some(node));
    assert_eq!(status, 201, "{body}");
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let (_, port) = compute.call("POST", &format!("/projects/{PROJECT}/ports/udp"), None);
    let port0 = format!("{nodes}/{NODE}/adapters/0/ports/0");
    let nio = json!({"type": "nio_udp", "lport": port["udp_port"], "rhost": "127.0.0.1",
        "rport": peer.local_addr().unwrap().port(), "filters": {}, "suspend": false});
    assert_eq!(
        compute.call("POST", &format!("{port0}/nio"), Some(nio)).0,
        201
    );
    let console_port = body["console"].as_u64().unwrap() as u16;
    assert_eq!(
        compute
            .call("POST", &format!("{nodes}/{NODE}/start"), None)
            .0,
        204
    );
    // The daemon replays what the guest printed before: connecting after the start misses
    // nothing.
    let mut console = Console::connect(console_port);
    console.addressed("10.9.9.1");

    let ethernet = json!({"capture_file_name": "n1_0-0_to_n2_0-0.pcap",
        "data_link_type": "DLT_RAW"});
    let (status, body) = compute.call("POST", &format!("{port0}/capture/start"), Some(ethernet));
    assert_eq!(
        (status, body["message"].as_str().unwrap()),
        (
            409,
            "data link type DLT_RAW is not supported: a QEMU adapter carries Ethernet (DLT_EN10MB)"
        )
    );
    let start = json!({"capture_file_name": "n1_0-0_to_n2_0-0.pcap",
        "data_link_type": "DLT_EN10MB"});
    let (status, body) = compute.call("POST", &format!("{port0}/capture/start"), Some(start));
    assert_eq!(status, 200, "{body}");
    assert!(
        body["pcap_file_path"].as_str().unwrap().ends_with(".pcap"),
        "{body}"
    );

    let url = compute.url(&format!("{port0}/capture/stream"));
    let stream = std::thread::spawn(move || {
        let mut resp = ureq::get(&url)
            .header("Authorization", compute::AUTH)
            .call()
            .unwrap();
        let kind = resp.headers()["content-type"].to_str().unwrap().to_string();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut resp.body_mut().as_reader(), &mut bytes).unwrap();
        (kind, bytes)
    });
    let out = console
        .run(
            "ping -c 3 -W 1 10.9.9.2",
            std::time::Duration::from_secs(30),
        )
        .unwrap();
    assert!(out.contains("3 packets transmitted"), "{out}");
    let mut frame = [0u8; 2048];
    let (n, _) = peer.recv_from(&mut frame).unwrap();
    assert!(n >= 42, "the tunnel carried a frame of {n} bytes");

    assert_eq!(
        compute
            .call("POST", &format!("{port0}/capture/stop"), None)
            .0,
        204
    );
    let (kind, pcap) = stream.join().unwrap();
    assert_eq!(kind, "application/vnd.tcpdump.pcap");
    assert_eq!(&pcap[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "a libpcap file");
    let mut tshark = std::process::Command::new("tshark")
        .args(["-r", "-", "-T", "fields", "-e", "arp.dst.proto_ipv4"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("tshark (package tshark)");
    std::io::Write::write_all(&mut tshark.stdin.take().unwrap(), &pcap).unwrap();
    let read = tshark.wait_with_output().unwrap();
    let asked: Vec<String> = String::from_utf8_lossy(&read.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    assert!(
        !asked.is_empty() && asked.iter().all(|ip| ip == "10.9.9.2"),
        "ARP requests for the peer: {asked:?}"
    );
    assert_eq!(
        compute
            .call("DELETE", &format!("/projects/{PROJECT}"), None)
            .0,
        204
    );
    assert_eq!(lab.manager.list_vms().await.unwrap(), []);
}
