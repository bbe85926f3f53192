//! Manager.Connect, Disconnect and UdpHost: cables between two of the daemon's VMs made in
//! one call on real guests (running, stopped then started, rewired), unmade from either
//! end, and every refused Connect leaving both VMs' tunnels as they were, with no port taken.

mod common;

use common::*;
use std::collections::HashMap;
use zbus::{ObjectPath, OwnedObjectPath, Variant};

/// The guest on `console` booted, eth0 at `ip`.
fn boot(mut console: Console, ip: &str) -> Console {
    console.addressed(ip);
    console
}

type Tunnels = Vec<(u32, u16, String, u16)>;

async fn tunnels(vm: &VmProxy<'_>) -> Tunnels {
    vm.tunnels().await.unwrap()
}

fn path_of(vm: &VmProxy<'_>) -> OwnedObjectPath {
    vm.inner().path().clone().into()
}

#[tokio::test]
async fn guests_are_wired_rewired_and_unwired_in_one_call_each() {
    let lab = Lab::start().await;
    let m = &lab.manager;
    assert_eq!(m.udp_host().await.unwrap(), "127.0.0.1");
    let here = "127.0.0.1".to_string();
    let a = create(m, "a", guest_settings(&[])).await;
    let b = create(m, "b", guest_settings(&[])).await;
    let c = create(m, "c", guest_settings(&[])).await;
    let (pa_, pb_, pc_) = (path_of(&a), path_of(&b), path_of(&c));
    a.start().await.unwrap();
    b.start().await.unwrap();
    let ca = Console::connect(a.console_port().await.unwrap());
    let cb = Console::connect(b.console_port().await.unwrap());
    let mut ca = boot(ca, "10.0.0.1");
    let mut cb = boot(cb, "10.0.0.2");

    // Two running guests, wired live.
    m.connect(&pa_, 0, &pb_, 0).await.unwrap();
    let ta = tunnels(&a).await;
    let tb = tunnels(&b).await;
    assert_eq!(ta.len(), 1, "{ta:?}");
    let (ap, bp) = (ta[0].1, ta[0].3);
    assert_eq!(ta, [(0, ap, here.clone(), bp)]);
    assert_eq!(tb, [(0, bp, here.clone(), ap)]);
    assert!(lab.daemon.udp_ports.contains(&ap) && lab.daemon.udp_ports.contains(&bp));
    assert!(ca.comes_to_reach("10.0.0.2"), "a reaches b");
    assert!(cb.comes_to_reach("10.0.0.1"), "b reaches a");
    // The same pair again, from either side: nothing to do.
    m.connect(&pa_, 0, &pb_, 0).await.unwrap();
    m.connect(&pb_, 0, &pa_, 0).await.unwrap();
    assert_eq!((tunnels(&a).await, tunnels(&b).await), (ta, tb));

    // Rewired to c, which is stopped: b's end is unplugged, c's is attached at start.
    m.connect(&pa_, 0, &pc_, 0).await.unwrap();
    assert_eq!(tunnels(&b).await, [], "b's old end is gone");
    let ta = tunnels(&a).await;
    let tc = tunnels(&c).await;
    assert_eq!(ta.len(), 1, "{ta:?}");
    let (ap2, cp) = (ta[0].1, ta[0].3);
    assert_eq!(ta, [(0, ap2, here.clone(), cp)]);
    assert_eq!(tc, [(0, cp, here.clone(), ap2)]);
    c.start().await.unwrap();
    let cc = Console::connect(c.console_port().await.unwrap());
    let mut cc = boot(cc, "10.0.0.3");
    assert!(ca.comes_to_reach("10.0.0.3"), "a reaches c");
    assert!(cc.comes_to_reach("10.0.0.1"), "c reaches a");
    assert!(!cb.reaches("10.0.0.1"), "b no longer reaches a");

    // Unwired from c's end: both ends go, and every port is free again.
    m.disconnect(&pc_, 0).await.unwrap();
    assert_eq!((tunnels(&a).await, tunnels(&c).await), (vec![], vec![]));
    assert!(!ca.reaches("10.0.0.3"), "a no longer reaches c");
    // An adapter without a tunnel: nothing to do.
    m.disconnect(&pa_, 0).await.unwrap();
    let mut freed = Vec::new();
    for _ in 0..4 {
        freed.push(m.allocate_udp_port().await.unwrap());
    }
    let mut used = vec![ap, bp, ap2, cp];
    used.sort();
    assert_eq!(freed, used, "the pool hands out its lowest free ports");
    for vm in [&a, &b, &c] {
        assert_eq!(vm.state().await.unwrap(), "running");
    }
}

/// UDP sockets on every port of `range` that is free now, bound as the daemon binds them
/// (on udp_host = 0.0.0.0), but for `keep`.
fn hold_all_but(range: &std::ops::RangeInclusive<u16>, keep: u16) -> Vec<std::net::UdpSocket> {
    range
        .clone()
        .filter(|p| *p != keep)
        .filter_map(|p| std::net::UdpSocket::bind(("0.0.0.0", p)).ok())
        .collect()
}

#[tokio::test]
async fn a_refused_connect_leaves_both_vms_as_they_were_and_takes_no_port() {
    let lab = Lab::with_config("udp_host = \"0.0.0.0\"\n").await;
    let m = &lab.manager;
    assert_eq!(
        m.udp_host().await.unwrap(),
        "127.0.0.1",
        "a wildcard's loopback"
    );
    let x = create(m, "x", HashMap::new()).await;
    let y = create(m, "y", HashMap::new()).await;
    let legacy = HashMap::from([("LegacyNetworking", Variant::from(true))]);
    let z = create(m, "z", legacy).await;
    let (px, py, pz) = (path_of(&x), path_of(&y), path_of(&z));
    // x is wired elsewhere already: a refusal must leave that tunnel, port and all.
    let p0 = m.allocate_udp_port().await.unwrap();
    x.add_udp_tunnel(0, p0, "192.0.2.1", 4000).await.unwrap();
    let x_before = tunnels(&x).await;
    let lowest_free = m.allocate_udp_port().await.unwrap();
    m.release_udp_port(lowest_free).await.unwrap();

    let no_vm =
        ObjectPath::from_static_str_unchecked("/org/gns3/Qemu/vm/00000000000000000000000000000000");
    let manager_path = ObjectPath::from_static_str_unchecked("/org/gns3/Qemu");
    let cases: Vec<(&str, zbus::Result<()>, &str, &str)> = vec![
        (
            "adapter out of range",
            m.connect(&px, 0, &py, 1).await,
            "InvalidArgument",
            "VM 'y' has no adapter 1: it has 1 adapter, number 0",
        ),
        (
            "a path that is no VM",
            m.connect(&px, 0, &no_vm, 0).await,
            "NotFound",
            "no VM of this daemon",
        ),
        (
            "the manager's path",
            m.connect(&manager_path, 0, &py, 0).await,
            "NotFound",
            "no VM of this daemon",
        ),
        (
            "the same adapter twice",
            m.connect(&px, 0, &px, 0).await,
            "InvalidArgument",
            "both ends are adapter 0 of VM 'x'",
        ),
        (
            "a second end that refuses its tunnel",
            m.connect(&px, 0, &pz, 0).await,
            "InvalidArgument",
            "allow_unsafe_tunnels = true",
        ),
        (
            "Disconnect of no VM",
            m.disconnect(&no_vm, 0).await,
            "NotFound",
            "no VM of this daemon",
        ),
        (
            "Disconnect of an adapter out of range",
            m.disconnect(&px, 3).await,
            "InvalidArgument",
            "VM 'x' has no adapter 3",
        ),
    ];
    for (what, result, name, says) in cases {
        let e = result.expect_err(what);
        assert_eq!(
            error_name(&e),
            format!("org.gns3.Qemu.Error.{name}"),
            "{what}: {e}"
        );
        assert!(e.to_string().contains(says), "{what}: {e}");
        assert_eq!(tunnels(&x).await, x_before, "{what}");
        assert_eq!(
            (tunnels(&y).await, tunnels(&z).await),
            (vec![], vec![]),
            "{what}"
        );
        let p = m.allocate_udp_port().await.unwrap();
        assert_eq!(p, lowest_free, "{what}: a port was kept");
        m.release_udp_port(p).await.unwrap();
    }

    // One port left in the range, where Connect needs two.
    let held = hold_all_but(&lab.daemon.udp_ports, lowest_free);
    let e = m.connect(&px, 0, &py, 0).await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.PortUnavailable", "{e}");
    assert_eq!(tunnels(&x).await, x_before);
    assert_eq!(tunnels(&y).await, []);
    assert_eq!(m.allocate_udp_port().await.unwrap(), lowest_free);
    m.release_udp_port(lowest_free).await.unwrap();
    drop(held);

    // With ports to be had, the same Connect rewires x to y, on the loopback.
    m.connect(&px, 0, &py, 0).await.unwrap();
    let tx = tunnels(&x).await;
    let (xp, yp) = (tx[0].1, tx[0].3);
    assert_eq!(tx, [(0, xp, "127.0.0.1".to_string(), yp)]);
    assert_eq!(tunnels(&y).await, [(0, yp, "127.0.0.1".to_string(), xp)]);
    assert!(xp != p0 && yp != p0, "{tx:?}");
    // x's old port went with its old tunnel.
    assert_eq!(m.allocate_udp_port().await.unwrap(), p0);
}

#[tokio::test]
async fn two_connects_at_once_on_one_adapter_leave_one_whole_cable() {
    let lab = Lab::start().await;
    let m = &lab.manager;
    let p = create(m, "p", HashMap::new()).await;
    let q = create(m, "q", HashMap::new()).await;
    let r = create(m, "r", HashMap::new()).await;
    let (pp, pq, pr) = (path_of(&p), path_of(&q), path_of(&r));
    for _ in 0..5 {
        let (to_q, to_r) = tokio::join!(m.connect(&pp, 0, &pq, 0), m.connect(&pp, 0, &pr, 0));
        to_q.unwrap();
        to_r.unwrap();
        let tp = tunnels(&p).await;
        let (tq, tr) = (tunnels(&q).await, tunnels(&r).await);
        assert_eq!(tp.len(), 1, "{tp:?}");
        let (local, remote) = (tp[0].1, tp[0].3);
        let facing = vec![(0, remote, "127.0.0.1".to_string(), local)];
        // Whichever ran last made the cable; the other's end was unplugged.
        assert!(
            (tq == facing && tr.is_empty()) || (tr == facing && tq.is_empty()),
            "p {tp:?}, q {tq:?}, r {tr:?}"
        );
        let seen = invariants::check(lab.dir.path(), m).await;
        invariants::check_ports(m, &seen, &lab.daemon.ports, &lab.daemon.udp_ports).await;
        m.disconnect(&pp, 0).await.unwrap();
    }
}
