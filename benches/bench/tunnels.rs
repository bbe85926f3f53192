//! UDP tunnel throughput: TCP from guest A to guest B over two VMs wired by the daemon's UDP
//! tunnels (e1000 -> hub -> a `dgram` netdev on QEMU 7.2, `socket` on older binaries), beside
//! the floor: the same guests started by hand, each e1000 straight on a `-netdev socket` UDP
//! pair. The ratio of the medians is the cost of the daemon's network layout.
//!
//! The daemon's pair also runs with a packet capture on A's adapter (QEMU's filter-dump on
//! the NIC's hub port, off the data path), beside its own runs without one: the capture
//! must keep at least 0.9 of the throughput.
//!
//! Both pairs are booted at once and their runs alternate, so that the load of a shared
//! machine drifting during the bench weighs on both alike.

use crate::common::{self, Console, Lab};
use crate::hand::Qemu;
use crate::lab::{next_marker, timed};
use crate::report::{self, Figure, Report, Target};
use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::time::Duration;
use tokio::runtime::Runtime;
use zbus::Variant;

const SECTION: &str = "tunnels";
/// 64 KiB blocks per transfer: 8 MiB, 2 to 6 s at the 10-35 Mbit/s TCG manages here.
const BLOCKS: u64 = 128;
const BYTES: u64 = BLOCKS * 64 * 1024;
const RUNS: usize = 5;
/// Four guests boot at once on what may be two busy cores.
const BOOT: Duration = Duration::from_secs(180);
const SHELL: Duration = Duration::from_secs(60);
const TRANSFER: Duration = Duration::from_secs(300);
/// What a capture may cost: at most a tenth of the throughput.
const CAPTURE_COST_LIMIT: f64 = 0.1;

pub fn run(rt: &Runtime) -> Report {
    let guest = common::guest();
    eprintln!("booting the hand-started pair and the daemon's pair");
    let mut direct = DirectPair::start(guest);
    let lab = rt.block_on(Lab::start());
    let (port_a, port_b, vm_a) = rt.block_on(daemon_pair(&lab));
    let mut links = [
        Link::new("direct socket pair (floor)", direct.consoles()),
        Link::new(
            "daemon UDP tunnels",
            (Console::connect(port_a), Console::connect(port_b)),
        ),
    ];
    for link in &mut links {
        link.wait_ready();
    }
    for link in &mut links {
        // The first transfer also pays for TCG translating the network paths: not counted.
        let warm_up = link.transfer();
        eprintln!("{}: warm-up {warm_up:.1} Mbit/s", link.label);
    }
    // 0: the floor, 1: the daemon's pair, 2: the daemon's pair while A's adapter 0 is
    // captured (the capture starts before the run and stops after it, untimed).
    let mut samples = [Vec::new(), Vec::new(), Vec::new()];
    for r in 0..RUNS {
        // Rotate which goes first, so none always runs right after another.
        let mut order = [0, 1, 2];
        order.rotate_left(r % 3);
        for i in order {
            let link = &mut links[i.min(1)];
            let captured = i == 2;
            if captured {
                rt.block_on(capture(&vm_a, true));
            }
            let mbits = link.transfer();
            if captured {
                rt.block_on(capture(&vm_a, false));
            }
            let label = if captured { CAPTURED } else { link.label };
            eprintln!("{label}: run {} {mbits:.1} Mbit/s", r + 1);
            samples[i].push(mbits);
        }
    }
    let ratio = report::median(&samples[1]) / report::median(&samples[0]);
    let kept = report::median(&samples[2]) / report::median(&samples[1]);
    let [floor, daemon, captured] = samples;
    Report {
        figures: vec![
            Figure::new(SECTION, links[0].label, "Mbit/s", floor),
            Figure::new(SECTION, links[1].label, "Mbit/s", daemon),
            Figure::new(SECTION, CAPTURED, "Mbit/s", captured),
            Figure::new(SECTION, "daemon / direct (medians)", "ratio", vec![ratio]),
            Figure::new(
                SECTION,
                "captured / not captured (medians)",
                "ratio",
                vec![kept],
            ),
        ],
        targets: vec![Target::new(
            SECTION,
            "throughput a capture costs (1 - captured / not)",
            1.0 - kept,
            CAPTURE_COST_LIMIT,
            "ratio",
        )],
    }
}

const CAPTURED: &str = "daemon UDP tunnels, A's adapter captured";

/// Starts (or stops) a capture of VM A's adapter 0.
async fn capture(vm: &common::VmProxy<'static>, on: bool) {
    if on {
        vm.start_capture(0, std::collections::HashMap::new())
            .await
            .expect("StartCapture");
    } else {
        vm.stop_capture(0).await.expect("StopCapture");
    }
}

/// Two VMs of the daemon, adapter 0 of each joined to the other's by a UDP tunnel, started;
/// returns their console ports and A.
async fn daemon_pair(lab: &Lab) -> (u16, u16, common::VmProxy<'static>) {
    // The daemon nices its QEMUs by default ("low"); on a busy machine that alone would
    // slow its pair, so both pairs run at the hand-started QEMUs' priority.
    let settings = || {
        common::guest_settings(&[
            ("Adapters", Variant::from(1u32)),
            ("AdapterType", Variant::from("e1000")),
            ("ProcessPriority", Variant::from("normal")),
        ])
    };
    let a = common::create(&lab.manager, "bench-a", settings()).await;
    let b = common::create(&lab.manager, "bench-b", settings()).await;
    let m = &lab.manager;
    let pa = m.allocate_udp_port().await.expect("AllocateUdpPort");
    let pb = m.allocate_udp_port().await.expect("AllocateUdpPort");
    for (vm, local, remote) in [(&a, pa, pb), (&b, pb, pa)] {
        vm.add_udp_tunnel(0, local, "127.0.0.1", remote)
            .await
            .expect("AddUdpTunnel");
    }
    a.start().await.expect("starting VM bench-a");
    b.start().await.expect("starting VM bench-b");
    (
        a.console_port().await.expect("ConsolePort of bench-a"),
        b.console_port().await.expect("ConsolePort of bench-b"),
        a,
    )
}

/// The floor: two QEMUs whose NICs send each other UDP datagrams directly.
struct DirectPair {
    a: Qemu,
    b: Qemu,
    // Holds QEMU's output; after the QEMUs in drop order.
    _dir: tempfile::TempDir,
}

impl DirectPair {
    fn start(guest: &Path) -> DirectPair {
        let dir = tempfile::tempdir().expect("temp dir for the direct pair's logs");
        let (ua, ub) = (free_udp_port(), free_udp_port());
        let a = start_qemu(guest, dir.path(), "a", ua, ub, "52:54:00:be:0c:01");
        let b = start_qemu(guest, dir.path(), "b", ub, ua, "52:54:00:be:0c:02");
        DirectPair { a, b, _dir: dir }
    }

    fn consoles(&mut self) -> (Console, Console) {
        (self.a.console(), self.b.console())
    }
}

fn start_qemu(guest: &Path, dir: &Path, name: &str, own: u16, peer: u16, mac: &str) -> Qemu {
    let log = dir.join(format!("qemu-{name}.log"));
    let extra = [
        "-netdev".to_string(),
        format!("socket,id=n0,udp=127.0.0.1:{peer},localaddr=127.0.0.1:{own}"),
        "-device".to_string(),
        format!("e1000,netdev=n0,mac={mac}"),
    ];
    Qemu::start(guest, &log, &extra)
}

/// A UDP port free right now. Another process could take it before QEMU binds it; QEMU
/// then exits and `console` says so.
fn free_udp_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .expect("binding a UDP port")
        .port()
}

/// Two guests on one segment, driven over their serial consoles: A at 10.0.0.1 sends to B
/// at 10.0.0.2.
struct Link {
    label: &'static str,
    a: Console,
    b: Console,
}

impl Link {
    fn new(label: &'static str, (a, b): (Console, Console)) -> Link {
        Link { label, a, b }
    }

    /// Waits for both guests to boot, addresses them, and waits until A reaches B.
    fn wait_ready(&mut self) {
        for (console, addr) in [(&mut self.a, "10.0.0.1"), (&mut self.b, "10.0.0.2")] {
            console
                .wait_for("GUEST-NET eth0", BOOT)
                .unwrap_or_else(|e| panic!("{}: no eth0 in the guest: {e}", self.label));
            console
                .run(&format!("ip addr add {addr}/24 dev eth0"), SHELL)
                .unwrap_or_else(|e| panic!("{}: setting {addr}: {e}", self.label));
        }
        // e1000 takes a moment to report its link up; until then the kernel holds the frames.
        self.a
            .run(
                "until ping -c 1 -W 1 10.0.0.2 >/dev/null; do :; done",
                SHELL,
            )
            .unwrap_or_else(|e| panic!("{}: A never reached B: {e}", self.label));
    }

    /// One TCP transfer of BYTES from A to B; returns Mbit/s.
    ///
    /// Busybox's dd here prints no timing line and its date has no %N, so the host times
    /// the transfer: from the marker A's shell prints right before the pipeline to the one
    /// it prints right after. Both markers cross the same serial console, so its latency
    /// cancels out. A's nc exits only once B's nc has closed the connection, that is after
    /// B has read every byte.
    fn transfer(&mut self) -> f64 {
        let n = next_marker();
        // B listens in the background and reports the byte count when the sender is done;
        // A may connect only once B listens, hence the netstat loop.
        self.b
            .run(
                &format!(
                    "(echo RX_$((1+{n}))_ $(nc -l -p 5001 | wc -c) _XR) & \
                     while ! netstat -ltn | grep -q ':5001 '; do usleep 10000; done"
                ),
                SHELL,
            )
            .unwrap_or_else(|e| panic!("{}: starting the receiver: {e}", self.label));
        let (elapsed, out) = timed(
            &mut self.a,
            &format!("dd if=/dev/zero bs=64k count={BLOCKS} 2>/dev/null | nc 10.0.0.2 5001"),
            SHELL,
            TRANSFER,
        )
        .unwrap_or_else(|e| panic!("{}: sending: {e}", self.label));
        assert!(
            out.trim().is_empty(),
            "{}: the sender said: {out}",
            self.label
        );
        let rx = format!("RX_{}_", n + 1);
        let received = self
            .b
            .wait_for(&rx, SHELL)
            .and_then(|_| self.b.wait_for("_XR", SHELL))
            .unwrap_or_else(|e| panic!("{}: the receiver's byte count: {e}", self.label));
        let received: u64 = received
            .trim_end_matches("_XR")
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}: byte count {received:?}: {e}", self.label));
        assert_eq!(received, BYTES, "{}: B did not get every byte", self.label);
        BYTES as f64 * 8.0 / elapsed.as_secs_f64() / 1e6
    }
}
