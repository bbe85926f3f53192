//! Link control without unwiring, on real guests: a suspended cable passes nothing either
//! way while both guests keep their carrier, and passes again once made active; with
//! ReplicateLinkState false an adapter without a tunnel keeps its carrier and its NIC keeps
//! sending (into a sink), so it works at once when wired.

mod common;

use common::*;
use std::time::Duration;
use zbus::Variant;

const BOOT: Duration = Duration::from_secs(120);
const SHELL: Duration = Duration::from_secs(30);

/// Adapters and their addresses: `ip` on eth0, `ip1` on eth1.
fn addresses(console: &mut Console, ip: &str, ip1: &str) {
    console.wait_for("GUEST-NET eth1 ", BOOT).unwrap();
    for (dev, addr) in [("eth0", ip), ("eth1", ip1)] {
        console
            .run(&format!("ip addr add {addr}/24 dev {dev}"), SHELL)
            .unwrap();
    }
}

#[tokio::test]
async fn a_suspended_link_passes_nothing_and_an_unwired_one_can_keep_its_carrier() {
    let mut lab = Lab::start().await;
    let m = lab.manager.clone();
    let ports: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(m.allocate_udp_port().await.unwrap());
        }
        v
    };
    // a keeps its carrier without a cable, on virtio-net (whose sending stalls for good on
    // a hub that takes nothing); b is as a VM is by default.
    let two = ("Adapters", Variant::from(2u32));
    let a = create(
        &m,
        "a",
        guest_settings(&[
            two.clone(),
            ("AdapterType", Variant::from("virtio-net-pci")),
            ("ReplicateLinkState", Variant::from(false)),
        ]),
    )
    .await;
    let b = create(&m, "b", guest_settings(&[two])).await;
    assert!(b.replicate_link_state().await.unwrap());
    a.add_udp_tunnel(0, ports[0], "127.0.0.1", ports[1])
        .await
        .unwrap();
    b.add_udp_tunnel(0, ports[1], "127.0.0.1", ports[0])
        .await
        .unwrap();
    assert_eq!(
        a.links().await.unwrap(),
        [(0, true, false), (1, true, false)]
    );
    assert_eq!(
        b.links().await.unwrap(),
        [(0, true, false), (1, false, false)]
    );
    a.start().await.unwrap();
    b.start().await.unwrap();
    let mut ca = Console::connect(a.console_port().await.unwrap());
    let mut cb = Console::connect(b.console_port().await.unwrap());
    addresses(&mut ca, "10.0.0.1", "10.0.1.1");
    addresses(&mut cb, "10.0.0.2", "10.0.1.2");
    assert_eq!(ca.carrier("eth1", "1"), "1", "ReplicateLinkState off");
    assert_eq!(cb.carrier("eth1", "0"), "0", "ReplicateLinkState on");
    assert!(ca.comes_to_reach("10.0.0.2"), "a reaches b");

    // a sends on its unwired eth1 (into the sink), and it works once wired.
    assert!(!ca.reaches("10.0.1.2"));
    a.add_udp_tunnel(1, ports[2], "127.0.0.1", ports[3])
        .await
        .unwrap();
    b.add_udp_tunnel(1, ports[3], "127.0.0.1", ports[2])
        .await
        .unwrap();
    assert_eq!(cb.carrier("eth1", "1"), "1");
    assert!(ca.comes_to_reach("10.0.1.2"), "a's eth1 did not stall");

    // Suspended at a's end: nothing passes either way, both carriers stay up.
    a.set_link_suspended(0, true).await.unwrap();
    assert_eq!(
        a.links().await.unwrap(),
        [(0, true, true), (1, true, false)]
    );
    assert_eq!(
        a.tunnels().await.unwrap()[0],
        (0, ports[0], "127.0.0.1".to_string(), ports[1]),
        "the cable stays"
    );
    assert!(!ca.reaches("10.0.0.2"), "a -> b while suspended");
    assert!(!cb.reaches("10.0.0.1"), "b -> a while suspended");
    assert_eq!(ca.carrier("eth0", "1"), "1");
    assert_eq!(cb.carrier("eth0", "1"), "1");
    assert!(ca.reaches("10.0.1.2"), "the other cable still passes");
    // Suspending it again changes nothing; the same tunnel added again keeps it suspended.
    a.set_link_suspended(0, true).await.unwrap();
    a.add_udp_tunnel(0, ports[0], "127.0.0.1", ports[1])
        .await
        .unwrap();
    assert_eq!(a.links().await.unwrap()[0], (0, true, true));

    // Kept across a daemon restart: the new daemon leaves the running QEMU as it is.
    lab.daemon.crash();
    lab.daemon.restart(&lab.bus);
    let conn = lab.daemon.connect().await;
    let m = manager(&conn).await;
    let a = vm(&conn, &m.get_vm("a").await.unwrap()).await;
    let b = vm(&conn, &m.get_vm("b").await.unwrap()).await;
    // The consoles were the old daemon's connections.
    let mut ca = Console::connect(a.console_port().await.unwrap());
    let mut cb = Console::connect(b.console_port().await.unwrap());
    assert_eq!(a.links().await.unwrap()[0], (0, true, true));
    assert!(!ca.reaches("10.0.0.2"), "still suspended after the restart");

    // Active again.
    a.set_link_suspended(0, false).await.unwrap();
    assert_eq!(a.links().await.unwrap()[0], (0, true, false));
    assert!(ca.comes_to_reach("10.0.0.2"), "a reaches b again");
    assert!(cb.comes_to_reach("10.0.0.1"), "b reaches a again");

    // Unplugged with ReplicateLinkState off: the carrier stays, and a new cable passes.
    a.set_link_suspended(0, true).await.unwrap();
    a.remove_udp_tunnel(0).await.unwrap();
    assert_eq!(a.links().await.unwrap()[0], (0, true, false));
    assert_eq!(ca.carrier("eth0", "1"), "1");
    assert!(!ca.reaches("10.0.0.2"));
    a.add_udp_tunnel(0, ports[0], "127.0.0.1", ports[1])
        .await
        .unwrap();
    assert_eq!(a.links().await.unwrap()[0], (0, true, false), "a new cable");
    assert!(ca.comes_to_reach("10.0.0.2"), "a's eth0 did not stall");

    // No tunnel, no link to suspend.
    b.remove_udp_tunnel(1).await.unwrap();
    let e = b.set_link_suspended(1, true).await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.InvalidArgument", "{e}");
    assert!(
        e.to_string().contains("adapter 1 of VM 'b' has no tunnel"),
        "{e}"
    );
    assert_eq!(b.links().await.unwrap()[1], (1, false, false));
}
