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
    let lab = Lab::start().await;
    let dir = tempfile::Builder::new()
        .prefix("gns3-compute-")
        .tempdir()
        .unwrap();
    let compute = compute::Compute::start(&lab.bus.address, dir.path());
    let project = json!({"name": "lab", "project_id": PROJECT});
    assert_eq!(compute.call("POST", "/projects", Some(project)).0, 201);
    for image in ["initrd.gz", "vmlinuz"] {
        assert_eq!(compute.upload(image, &guest().join(image)), 204);
    }
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
