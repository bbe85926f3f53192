//! Adapters and UDP tunnels: real guests wired to each other and rewired while they run,
//! tunnel ports that only the daemon and the tunnel's peer can use, and every bad tunnel
//! request refused by name without changing anything. Longer than most files: each test is
//! one story on booted guests, which split up would boot them again.

mod common;

use common::udp::{all_taken, outsider_sends, queued, Peer};
use common::*;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;
use zbus::Variant;

const SHELL: Duration = Duration::from_secs(30);

/// The guest on `console` booted, eth0 at `ip`; with eth0's MAC.
fn boot(mut console: Console, ip: &str) -> (Console, String) {
    let mac = console.addressed(ip);
    (console, mac)
}

/// The netdev type (dgram or socket) of adapter 0's tunnel, from the human monitor.
async fn tunnel_type(vm: &VmProxy<'_>) -> String {
    let info = vm.human_monitor_command("info network").await.unwrap();
    let line = info
        .lines()
        .find_map(|l| l.split_once("gns3-0-tunnel: ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no tunnel of adapter 0 in: {info}"));
    line.split(",type=")
        .nth(1)
        .and_then(|t| t.split([',', ' ', '\r']).next())
        .unwrap_or(line)
        .to_string()
}

/// A QEMU binary that lacks the dgram netdev (as QEMU before 7.2 does): the real one, with
/// dgram left out of what `-netdev help` lists.
fn qemu_without_dgram(dir: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("qemu-without-dgram");
    std::fs::write(
        &path,
        "#!/bin/sh\n\
         if [ \"$1\" = -netdev ] && [ \"$2\" = help ]; then\n\
         \x20 qemu-system-x86_64 -netdev help | grep -vx dgram; exit 0\n\
         fi\n\
         exec qemu-system-x86_64 \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_string_lossy().into_owned()
}

/// Allows the socket netdev, which b and c below use.
const UNSAFE: &str = "allow_unsafe_tunnels = true\n";

#[tokio::test]
async fn guests_are_wired_unplugged_and_rewired_live() {
    let lab = Lab::with_config(UNSAFE).await;
    let m = &lab.manager;
    let (pa, pb, pc) = (
        m.allocate_udp_port().await.unwrap(),
        m.allocate_udp_port().await.unwrap(),
        m.allocate_udp_port().await.unwrap(),
    );
    for p in [pa, pb, pc] {
        assert!(lab.daemon.udp_ports.contains(&p), "{p}");
    }
    assert!(pa != pb && pb != pc && pa != pc);

    // a: e1000 on dgram; b: two virtio-net-pci on socket (LegacyNetworking); c: a binary
    // without dgram, so socket too, and a MAC base of its own.
    let a = create(m, "a", guest_settings(&[])).await;
    let b = create(
        m,
        "b",
        guest_settings(&[
            ("AdapterType", Variant::from("virtio-net-pci")),
            ("LegacyNetworking", Variant::from(true)),
            ("Adapters", Variant::from(2u32)),
        ]),
    )
    .await;
    let no_dgram = qemu_without_dgram(lab.dir.path());
    let c = create(
        m,
        "c",
        guest_settings(&[
            ("QemuPath", Variant::from(no_dgram)),
            ("MacAddress", Variant::from("52:54:00:12:34:50")),
        ]),
    )
    .await;
    assert_eq!(a.adapter_type().await.unwrap(), "e1000");

    // Tunnels set while stopped are kept and attached at start.
    a.add_udp_tunnel(0, pa, "127.0.0.1", pb).await.unwrap();
    b.add_udp_tunnel(0, pb, "localhost", pa).await.unwrap();
    assert_eq!(
        a.tunnels().await.unwrap(),
        [(0, pa, "127.0.0.1".to_string(), pb)]
    );
    let mut consoles = Vec::new();
    for vm in [&a, &b, &c] {
        vm.start().await.unwrap();
        consoles.push(Console::connect(vm.console_port().await.unwrap()));
    }
    let a_pid = a.pid().await.unwrap();
    let [ca, cb, cc] = <[Console; 3]>::try_from(consoles).ok().unwrap();
    let (mut ca, mac_a) = boot(ca, "10.0.0.1");
    let (mut cb, mac_b) = boot(cb, "10.0.0.2");
    let (mut cc, mac_c) = boot(cc, "10.0.0.3");
    // The guest sees the MACs the daemon shows: the base, then base + n.
    assert_eq!(mac_a, a.mac_address().await.unwrap());
    assert_eq!(mac_b, b.mac_address().await.unwrap());
    assert_eq!(mac_c, "52:54:00:12:34:50");
    let eth1 = cb.run("cat /sys/class/net/eth1/address", SHELL).unwrap();
    let last = u8::from_str_radix(&mac_b[15..], 16).unwrap();
    assert_eq!(eth1.trim(), format!("{}{:02x}", &mac_b[..15], last + 1));
    // The adapters are QEMU's devices: their number changes only while stopped.
    let e = b.set_adapters(1).await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.InvalidState", "{e}");
    assert_eq!(tunnel_type(&a).await, "dgram");
    assert_eq!(tunnel_type(&b).await, "socket");
    assert_eq!(ca.carrier("eth0", "1"), "1");
    assert_eq!(cc.carrier("eth0", "0"), "0", "no tunnel: no cable");
    assert!(ca.comes_to_reach("10.0.0.2"), "a reaches b");
    assert!(cb.comes_to_reach("10.0.0.1"), "b reaches a");
    // Why the socket netdev needs allow_unsafe_tunnels: QEMU binds b's port with
    // SO_REUSEADDR, and so can anyone. a's port is the daemon's socket, lent to its QEMU.
    if root_for("to bind the tunnels' ports as another user") {
        let mut want = all_taken(&[pa, pb]);
        want[1].reuse = "bound".into();
        assert_eq!(outsider_sends(&[pa, pb], &[]), want);
    }

    // Unplugged live: the carrier drops and nothing gets through.
    a.remove_udp_tunnel(0).await.unwrap();
    assert!(a.tunnels().await.unwrap().is_empty());
    assert_eq!(ca.carrier("eth0", "0"), "0");
    assert!(!ca.reaches("10.0.0.2"));
    // ... and plugged back.
    a.add_udp_tunnel(0, pa, "127.0.0.1", pb).await.unwrap();
    assert_eq!(ca.carrier("eth0", "1"), "1");
    assert!(ca.comes_to_reach("10.0.0.2"));

    // Rewired live from b to c: adding over a tunnel replaces it.
    c.add_udp_tunnel(0, pc, "127.0.0.1", pa).await.unwrap();
    assert_eq!(cc.carrier("eth0", "1"), "1");
    assert_eq!(tunnel_type(&c).await, "socket");
    a.add_udp_tunnel(0, pa, "127.0.0.1", pc).await.unwrap();
    assert_eq!(
        a.tunnels().await.unwrap(),
        [(0, pa, "127.0.0.1".to_string(), pc)]
    );
    assert!(ca.comes_to_reach("10.0.0.3"), "a reaches c");
    assert!(!ca.reaches("10.0.0.2"), "a no longer reaches b");

    // A restarted VM gets its tunnel back.
    drop(cc);
    c.stop().await.unwrap();
    c.start().await.unwrap();
    let (mut cc, _) = boot(
        Console::connect(c.console_port().await.unwrap()),
        "10.0.0.3",
    );
    assert_eq!(cc.carrier("eth0", "1"), "1");
    assert!(cc.comes_to_reach("10.0.0.1"), "c reaches a again");

    assert_eq!(a.pid().await.unwrap(), a_pid, "a never restarted");
    assert_eq!(a.state().await.unwrap(), "running");
}

/// The daemon's record of a VM, as on disk.
fn record(dir: &std::path::Path, id: &str) -> serde_json::Value {
    let path = dir.join("state/vms").join(id).join("vm.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
async fn tunnels_are_checked_stored_and_kept_across_restarts() {
    let mut lab = Lab::start().await;
    let m = lab.manager.clone();
    let a = create(&m, "a", HashMap::new()).await;
    let b = create(&m, "b", HashMap::new()).await;
    let a_id = a.id().await.unwrap();
    let a_mac = a.mac_address().await.unwrap();
    let port = m.allocate_udp_port().await.unwrap();
    a.add_udp_tunnel(0, port, "127.0.0.1", 4000).await.unwrap();
    // IPv6 and names are remote hosts too.
    b.add_udp_tunnel(0, lab.daemon.udp_ports.end() - 1, "::1", 4001)
        .await
        .unwrap();
    assert_eq!(
        record(lab.dir.path(), &a_id)["Tunnels"],
        serde_json::json!([{"Adapter": 0, "LocalPort": port, "RemoteHost": "127.0.0.1", "RemotePort": 4000}])
    );

    let held = std::net::UdpSocket::bind(("127.0.0.1", 0)).unwrap();
    let held_port = held.local_addr().unwrap().port();
    let state = lab.dir.path().join("state");
    let before = snapshot(&state);
    // Adapter out of range, ports 0, empty, malformed and unresolvable hosts, a port another
    // program holds, a port another VM's tunnel holds.
    const BAD: &str = "InvalidArgument";
    const TAKEN: &str = "PortUnavailable";
    let bad_tunnels = [
        (1, 30001, "127.0.0.1", 4000, BAD),
        (0, 0, "127.0.0.1", 4000, BAD),
        (0, 30001, "127.0.0.1", 0, BAD),
        (0, 30001, "", 4000, BAD),
        (0, 30001, "no such host", 4000, BAD),
        (0, 30001, "no-such-host.invalid", 4000, BAD),
        (0, held_port, "127.0.0.1", 4000, TAKEN),
        (0, port, "127.0.0.1", 4000, TAKEN),
    ];
    for (adapter, local, host, remote, want) in bad_tunnels {
        let what = format!("AddUdpTunnel({adapter}, {local}, {host:?}, {remote})");
        let e = b
            .add_udp_tunnel(adapter, local, host, remote)
            .await
            .expect_err(&what);
        assert_eq!(
            error_name(&e),
            format!("org.gns3.Qemu.Error.{want}"),
            "{what}: {e}"
        );
    }
    let cases: Vec<(&str, zbus::Result<()>, &str)> = vec![
        (
            "remove from an adapter out of range",
            b.remove_udp_tunnel(7).await,
            "InvalidArgument",
        ),
        (
            "release port 0",
            m.release_udp_port(0).await,
            "InvalidArgument",
        ),
        (
            "release a tunnel's port",
            m.release_udp_port(port).await,
            "InvalidState",
        ),
        (
            "fewer adapters than a tunnel needs",
            a.set_adapters(0).await,
            "InvalidArgument",
        ),
        (
            "a NIC model the binary does not have",
            a.set_adapter_type("e1001").await,
            "InvalidArgument",
        ),
        (
            "IPv6 on the socket netdev",
            a.configure(HashMap::from([
                ("LegacyNetworking", Variant::from(true)),
                ("Adapters", Variant::from(2u32)),
            ]))
            .await
            .and(a.add_udp_tunnel(1, 30001, "::1", 4000).await),
            "InvalidArgument",
        ),
    ];
    // The last case changed settings on purpose before its bad call; undo that first.
    a.configure(HashMap::from([
        ("LegacyNetworking", Variant::from(false)),
        ("Adapters", Variant::from(1u32)),
    ]))
    .await
    .unwrap();
    for (what, result, want) in &cases {
        let e = result.as_ref().expect_err(what);
        assert_eq!(
            error_name(e),
            format!("org.gns3.Qemu.Error.{want}"),
            "{what}: {e}"
        );
    }
    let wrong_model = cases[4].1.as_ref().unwrap_err().to_string();
    assert!(wrong_model.contains("virtio-net-pci"), "{wrong_model}");
    assert_eq!(snapshot(&state), before, "bad calls changed nothing");
    drop(held);

    // Ports that do not fit in a q never reach the daemon's logic: the signature is
    // refused with the standard error.
    let e = lab
        .conn
        .call_method(
            Some("org.gns3.Qemu"),
            a.inner().path(),
            Some("org.gns3.Qemu.VM"),
            "AddUdpTunnel",
            &(0u32, 70000u32, "127.0.0.1", 4000u16),
        )
        .await
        .unwrap_err();
    assert_eq!(
        error_name(&e),
        "org.freedesktop.DBus.Error.InvalidArgs",
        "{e}"
    );
    assert_eq!(snapshot(&state), before);
    // Unknown VMs are NotFound by name or id; a gone object is unknown to the bus.
    let e = m
        .get_vm("0123456789abcdef0123456789abcdef")
        .await
        .unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.NotFound");

    // A client's port is taken over by the tunnel that uses it, and a removed tunnel's
    // port goes back to the pool.
    let spare = m.allocate_udp_port().await.unwrap();
    b.add_udp_tunnel(0, spare, "localhost", 4002).await.unwrap();
    assert_eq!(
        error_name(&m.release_udp_port(spare).await.unwrap_err()),
        "org.gns3.Qemu.Error.InvalidState"
    );
    b.remove_udp_tunnel(0).await.unwrap();
    b.remove_udp_tunnel(0).await.unwrap();
    m.release_udp_port(spare).await.unwrap();
    assert!(b.tunnels().await.unwrap().is_empty());

    // A restarted daemon has the tunnels and holds their ports.
    lab.daemon.terminate();
    lab.daemon.restart(&lab.bus);
    let conn = lab.daemon.connect().await;
    let m = manager(&conn).await;
    let a = vm(&conn, &m.get_vm("a").await.unwrap()).await;
    let b = vm(&conn, &m.get_vm("b").await.unwrap()).await;
    assert_eq!(
        a.tunnels().await.unwrap(),
        [(0, port, "127.0.0.1".to_string(), 4000)]
    );
    assert_eq!(
        a.mac_address().await.unwrap(),
        a_mac,
        "the default MAC is stable"
    );
    let e = b
        .add_udp_tunnel(0, port, "127.0.0.1", 4000)
        .await
        .unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.PortUnavailable");
    assert!(
        std::net::UdpSocket::bind(("127.0.0.1", port)).is_err(),
        "a stopped VM's tunnel port is bound again at startup"
    );
    let a_path = a.inner().path().to_owned();
    a.delete().await.unwrap();
    b.add_udp_tunnel(0, port, "127.0.0.1", 4000).await.unwrap();
    let gone = vm(&conn, &a_path.into()).await;
    let e = gone.remove_udp_tunnel(0).await.unwrap_err();
    assert_eq!(error_name(&e), "org.freedesktop.DBus.Error.UnknownObject");
}

/// How many UDP sockets process `pid` has open: its other descriptors (the bus, a
/// sock_diag query, a blocking thread's) come and go on their own.
fn fds(pid: u32) -> usize {
    let mut udp = std::collections::HashSet::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        udp.extend(
            text.lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(9).map(str::to_string)),
        );
    }
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .filter(|inode| udp.contains(inode))
        .count()
}

#[tokio::test]
async fn only_the_daemon_binds_tunnel_ports_and_only_the_peer_reaches_the_guest() {
    if !root_for("to bind tunnel ports as another user") {
        return;
    }
    let lab = Lab::start().await;
    let m = &lab.manager;
    let daemon = lab.daemon.pid();
    let before = fds(daemon);
    let spare = m.allocate_udp_port().await.unwrap();
    assert_eq!(fds(daemon), before + 1, "one descriptor a port");
    let (ps, pr) = (
        m.allocate_udp_port().await.unwrap(),
        m.allocate_udp_port().await.unwrap(),
    );
    let stopped = create(m, "stopped", HashMap::new()).await;
    stopped
        .add_udp_tunnel(0, ps, "127.0.0.1", 4000)
        .await
        .unwrap();
    let peer = Peer::new();
    let vm = create(m, "guest", guest_settings(&[])).await;
    vm.add_udp_tunnel(0, pr, "127.0.0.1", peer.port())
        .await
        .unwrap();
    assert_eq!(
        fds(daemon),
        before + 3,
        "the tunnels took the ports' sockets"
    );

    // An allocated port, a stopped VM's tunnel port: another user can bind neither, and
    // what it sends them is not even kept.
    let (outsider, guest_ip) = (Ipv4Addr::new(10, 0, 0, 66), Ipv4Addr::new(10, 0, 0, 1));
    let junk = udp::arp_request(outsider, guest_ip);
    let ports = [spare, ps, pr];
    assert_eq!(outsider_sends(&ports, &junk), all_taken(&ports));
    for p in ports {
        assert_eq!(
            queued(p),
            Some(0),
            "port {p} kept what another user sent it"
        );
    }

    // Running: the peer's ARP questions are answered; another user can neither bind the
    // port nor get a frame to the guest.
    vm.start().await.unwrap();
    let console = Console::connect(vm.console_port().await.unwrap());
    let (mut console, _) = boot(console, "10.0.0.1");
    assert_eq!(console.carrier("eth0", "1"), "1");
    let first = Ipv4Addr::new(10, 0, 0, 9);
    assert!(peer.ask(pr, first, guest_ip).contains(&first));
    assert_eq!(outsider_sends(&[pr], &junk), all_taken(&[pr]));
    let second = Ipv4Addr::new(10, 0, 0, 10);
    let replies = peer.ask(pr, second, guest_ip);
    assert!(!replies.contains(&outsider), "{replies:?}");
    let arp = console.run("cat /proc/net/arp", SHELL).unwrap();
    assert!(
        arp.contains("10.0.0.10 ") && !arp.contains("10.0.0.66 "),
        "the guest heard from the peer only: {arp}"
    );

    // Removed live: the daemon and QEMU each close their copy of the socket, and the port
    // is free. Added again: taken at once, by a socket the daemon binds.
    let qemu = vm.pid().await.unwrap();
    let (running, qemu_fds) = (fds(daemon), fds(qemu));
    vm.remove_udp_tunnel(0).await.unwrap();
    assert_eq!((fds(daemon), fds(qemu)), (running - 1, qemu_fds - 1));
    drop(std::net::UdpSocket::bind(("127.0.0.1", pr)).unwrap());
    vm.add_udp_tunnel(0, pr, "127.0.0.1", peer.port())
        .await
        .unwrap();
    assert_eq!((fds(daemon), fds(qemu)), (running, qemu_fds));
    let third = Ipv4Addr::new(10, 0, 0, 11);
    assert!(peer.ask(pr, third, guest_ip).contains(&third));

    // Stopped: the port is the daemon's again, deaf.
    drop(console);
    vm.stop().await.unwrap();
    assert_eq!(outsider_sends(&[pr], &junk), all_taken(&[pr]));
    assert_eq!(queued(pr), Some(0));
    assert_eq!(
        fds(daemon),
        before + 3,
        "a stopped VM leaves its tunnel's socket only"
    );

    // Released and deleted: exactly what was held goes.
    m.release_udp_port(spare).await.unwrap();
    stopped.delete().await.unwrap();
    vm.delete().await.unwrap();
    assert_eq!(fds(daemon), before);
    for p in ports {
        drop(std::net::UdpSocket::bind(("127.0.0.1", p)).unwrap());
    }
}

#[tokio::test]
async fn the_socket_netdev_is_refused_unless_allowed_as_unsafe() {
    let mut lab = Lab::start().await;
    let m = lab.manager.clone();
    let no_dgram = qemu_without_dgram(lab.dir.path());
    let legacy = create(
        &m,
        "legacy",
        HashMap::from([("LegacyNetworking", Variant::from(true))]),
    )
    .await;
    let old_qemu = create(
        &m,
        "old-qemu",
        HashMap::from([("QemuPath", Variant::from(no_dgram.clone()))]),
    )
    .await;
    let wired = create(&m, "wired", HashMap::new()).await;
    let port = m.allocate_udp_port().await.unwrap();
    wired
        .add_udp_tunnel(0, port, "127.0.0.1", 4000)
        .await
        .unwrap();
    let spare = m.allocate_udp_port().await.unwrap();
    let fresh = lab.daemon.udp_ports.end() - 1;

    let state = lab.dir.path().join("state");
    let before = snapshot(&state);
    let cases: Vec<(&str, zbus::Result<()>, &str)> = vec![
        (
            "a tunnel on a LegacyNetworking VM",
            legacy.add_udp_tunnel(0, spare, "127.0.0.1", 4000).await,
            "it has LegacyNetworking on",
        ),
        (
            "a tunnel on a QEMU without dgram",
            old_qemu.add_udp_tunnel(0, fresh, "127.0.0.1", 4000).await,
            "no dgram netdev",
        ),
        (
            "LegacyNetworking on a VM with a tunnel",
            wired.set_legacy_networking(true).await,
            "it has LegacyNetworking on",
        ),
        (
            "a QEMU without dgram for a VM with a tunnel",
            wired.set_qemu_path(&no_dgram).await,
            "no dgram netdev",
        ),
    ];
    for (what, result, why) in &cases {
        let e = result.as_ref().expect_err(what);
        assert_eq!(
            error_name(e),
            "org.gns3.Qemu.Error.InvalidArgument",
            "{what}: {e}"
        );
        let text = e.to_string();
        assert!(
            text.contains(why) && text.contains("allow_unsafe_tunnels = true"),
            "{what}: {text}"
        );
    }
    assert_eq!(snapshot(&state), before, "the refusals changed nothing");
    let bound = |p: u16| std::net::UdpSocket::bind(("127.0.0.1", p)).is_err();
    assert!(bound(spare), "the allocated port is still held");
    assert!(!bound(fresh), "the refused tunnel's port was not taken");
    assert!(!wired.legacy_networking().await.unwrap());

    // Allowed (and documented unsafe): the tunnel is taken.
    let config = lab.dir.path().join("gns3-qemud.toml");
    let safe = std::fs::read_to_string(&config).unwrap();
    let restart = |lab: &mut Lab, text: String| {
        std::fs::write(&config, text).unwrap();
        lab.daemon.terminate();
        lab.daemon.restart(&lab.bus);
    };
    restart(&mut lab, format!("{safe}{UNSAFE}"));
    let conn = lab.daemon.connect().await;
    let m = manager(&conn).await;
    let legacy = vm(&conn, &m.get_vm("legacy").await.unwrap()).await;
    let spare = m.allocate_udp_port().await.unwrap();
    legacy
        .add_udp_tunnel(0, spare, "127.0.0.1", 4000)
        .await
        .unwrap();

    // Forbidden again: a restarted daemon holds the stopped VM's port, and Start refuses
    // before it runs anything.
    restart(&mut lab, safe);
    let conn = lab.daemon.connect().await;
    let m = manager(&conn).await;
    let legacy = vm(&conn, &m.get_vm("legacy").await.unwrap()).await;
    assert!(
        bound(spare),
        "a stopped VM's tunnel port is bound again at startup"
    );
    let e = legacy.start().await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.StartFailed", "{e}");
    assert!(e.to_string().contains("allow_unsafe_tunnels = true"), "{e}");
    assert_eq!(legacy.state().await.unwrap(), "stopped");
    assert!(qemu_pids_under(lab.dir.path()).is_empty());
}
