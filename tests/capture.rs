//! Packet capture on real guests: two guests ping each other through a relay in the test,
//! which notes the wall clock of every frame it carries; each frame a capture holds must be
//! one the relay carried, stamped within 10 ms of it (a frame the guest receives may pass
//! into it later than the relay passed it: see `stamped_right`), across a rewire, a suspend
//! and a daemon restart; read back by tshark from the file and from the live stream. One
//! story on booted guests, which split up would boot them again.

mod common;

use common::*;
use std::collections::HashMap;
use std::io::Read;
use std::net::UdpSocket;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zbus::Variant;

const SHELL: Duration = Duration::from_secs(30);
/// How far a record's stamp may be from when the relay saw its frame.
const WITHIN_US: i64 = 10_000;

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Frames with the wall clock (µs) at which each passed.
type Frames = Vec<(i64, Vec<u8>)>;

/// The cable between a (its tunnel's remote is `to_a`'s port) and b (`to_b`'s): every
/// datagram one sends is passed to the other, and noted with the wall clock as it passes.
struct Relay {
    to_a: Arc<UdpSocket>,
    to_b: Arc<UdpSocket>,
    seen: Arc<Mutex<Frames>>,
    /// Drop what goes to a (while a is paused: it would reach a only once it runs again).
    hold_a: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn new() -> Relay {
        let bind = || {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            Arc::new(s)
        };
        Relay {
            to_a: bind(),
            to_b: bind(),
            seen: Arc::default(),
            hold_a: Arc::default(),
            stop: Arc::default(),
        }
    }

    fn port_a(&self) -> u16 {
        self.to_a.local_addr().unwrap().port()
    }

    fn port_b(&self) -> u16 {
        self.to_b.local_addr().unwrap().port()
    }

    /// Carries frames from a's local port `pa` to b's `pb` and back.
    fn run(&self, pa: u16, pb: u16) {
        for (from, to, port, into_a) in [
            (self.to_a.clone(), self.to_b.clone(), pb, false),
            (self.to_b.clone(), self.to_a.clone(), pa, true),
        ] {
            let (seen, hold, stop) = (self.seen.clone(), self.hold_a.clone(), self.stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) = from.recv(&mut buf) else { continue };
                    if into_a && hold.load(Ordering::Relaxed) {
                        continue;
                    }
                    seen.lock().unwrap().push((now_us(), buf[..n].to_vec()));
                    let _ = to.send_to(&buf[..n], ("127.0.0.1", port));
                }
            });
        }
    }

    /// Sends `frame` to b as if a had sent it, noted as the others.
    fn inject_to_b(&self, pb: u16, frame: &[u8]) {
        self.seen.lock().unwrap().push((now_us(), frame.to_vec()));
        self.to_b.send_to(frame, ("127.0.0.1", pb)).unwrap();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The records of a pcap file: (stamp in µs, frame).
fn records(pcap: &[u8]) -> Vec<(i64, Vec<u8>)> {
    assert!(pcap.len() >= 24, "no pcap header in {} bytes", pcap.len());
    assert_eq!(&pcap[..4], &0xa1b2c3d4u32.to_le_bytes());
    let word = |at: usize| u32::from_le_bytes(pcap[at..at + 4].try_into().unwrap());
    let mut out = Vec::new();
    let mut at = 24;
    while at < pcap.len() {
        let (s, us, caplen) = (word(at), word(at + 4), word(at + 8) as usize);
        out.push((
            i64::from(s) * 1_000_000 + i64::from(us),
            pcap[at + 16..at + 16 + caplen].to_vec(),
        ));
        at += 16 + caplen;
    }
    assert_eq!(at, pcap.len(), "the last record is whole");
    out
}

/// Every record is a frame the relay carried, stamped within [`WITHIN_US`] of when it
/// passed: every frame the guest of `mac` sent. A frame it receives may be stamped later
/// than the relay passed it, never earlier: while the guest's NIC takes nothing (its ring
/// full, its driver resetting after a carrier change) QEMU leaves frames in the tunnel's
/// socket, and they pass into the guest only once QEMU reads them; most pings pass at once.
fn stamped_right(what: &str, recs: &[(i64, Vec<u8>)], relay: &Relay, mac: &str) {
    let mac: Vec<u8> = mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    let seen = relay.seen.lock().unwrap();
    let (mut pings, mut pings_near) = (0, 0);
    for (i, (ts, frame)) in recs.iter().enumerate() {
        let sent = frame.get(6..12) == Some(&mac[..]);
        let ping = frame.get(12..14) == Some(&[8, 0]) && frame.get(23) == Some(&1);
        let offs: Vec<i64> = seen
            .iter()
            .filter(|(_, f)| f == frame)
            .map(|(t, _)| ts - t)
            .collect();
        if std::env::var_os("CAPTURE_DEBUG").is_some() {
            eprintln!(
                "{what}: {} bytes, sent {sent}, ping {ping}, {ts}: {offs:?}",
                frame.len()
            );
        }
        assert!(
            !offs.is_empty(),
            "{what}: record {i} ({} bytes) was never relayed",
            frame.len()
        );
        let near = offs.iter().any(|o| o.abs() <= WITHIN_US);
        if sent {
            assert!(
                near,
                "{what}: record {i}, sent, is stamped {offs:?} µs from when it passed"
            );
        } else {
            assert!(
                offs.iter().any(|o| *o >= -WITHIN_US),
                "{what}: record {i}, received, is stamped before its frame passed: {offs:?} µs"
            );
            if ping {
                pings += 1;
                pings_near += usize::from(near);
            }
        }
    }
    assert!(
        pings_near * 2 >= pings,
        "{what}: of {pings} pings received, only {pings_near} are stamped within {WITHIN_US} µs"
    );
}

/// tshark's reading of a pcap (a file, or `-` for `input`): one line per frame, with
/// its time, source MAC, IP source and destination, and ICMP type.
fn tshark(file: &str, input: Option<&[u8]>) -> Vec<String> {
    tshark_of(file, input, true)
}

/// As [`tshark`], of a file still being written, whose last record may be cut short.
fn tshark_so_far(file: &str) -> Vec<String> {
    tshark_of(file, None, false)
}

fn tshark_of(file: &str, input: Option<&[u8]>, whole: bool) -> Vec<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("/usr/bin/tshark")
        .args(["-r", file, "-T", "fields", "-E", "separator=,"])
        .args(["-e", "frame.time_epoch", "-e", "eth.src", "-e", "ip.src"])
        .args(["-e", "ip.dst", "-e", "icmp.type"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tshark (Debian's tshark package) runs");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(bytes) = input {
        stdin.write_all(bytes).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() || !whole,
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// How many of tshark's lines are ICMP `icmp_type` (8 request, 0 reply) from `src`.
fn icmp(lines: &[String], src: &str, icmp_type: &str) -> usize {
    lines
        .iter()
        .filter(|l| {
            let f: Vec<&str> = l.split(',').collect();
            f.len() == 5 && f[2] == src && f[4] == icmp_type
        })
        .count()
}

/// Pings `ip` until it answers three times in a row (the first may go to ARP).
fn ping(console: &mut Console, ip: &str) {
    let ok = (0..5).any(|_| {
        let out = console
            .run(
                &format!("ping -c 3 -W 1 {ip} >/dev/null 2>&1 && echo PING-YES || echo PING-NO"),
                SHELL,
            )
            .unwrap();
        out.contains("PING-YES")
    });
    assert!(ok, "no answer from {ip}");
}

fn options(pairs: &[(&'static str, Variant<'static>)]) -> HashMap<&'static str, Variant<'static>> {
    pairs.iter().cloned().collect()
}

/// Reads a capture's live stream to its end, in a thread.
fn drain(fd: zbus::OwnedFd) -> std::thread::JoinHandle<Vec<u8>> {
    let mut stream = UnixStream::from(std::os::fd::OwnedFd::from(fd));
    std::thread::spawn(move || {
        let mut out = Vec::new();
        stream.read_to_end(&mut out).unwrap();
        out
    })
}

/// A frame b takes in and ignores: to its MAC, of a local experimental EtherType, `len`
/// bytes long, carrying `tag`.
fn junk(mac_b: &str, tag: u8, n: u32, len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = mac_b
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    f.extend([0x02, 0, 0, 0, 0, 0x99, 0x88, 0xb5, tag]);
    f.extend(n.to_be_bytes());
    f.resize(len, 0);
    f
}

#[tokio::test]
async fn captures_hold_every_frame_on_the_wall_clock() {
    // 1 MiB: the last capture fills it.
    let mut lab = Lab::with_config("capture_max_mib = 1\n").await;
    let m = lab.manager.clone();
    let (pa, pb) = (
        m.allocate_udp_port().await.unwrap(),
        m.allocate_udp_port().await.unwrap(),
    );
    let relay = Relay::new();
    relay.run(pa, pb);
    let a = create(&m, "a", guest_settings(&[])).await;
    let b = create(&m, "b", guest_settings(&[])).await;
    a.add_udp_tunnel(0, pa, "127.0.0.1", relay.port_a())
        .await
        .unwrap();
    b.add_udp_tunnel(0, pb, "127.0.0.1", relay.port_b())
        .await
        .unwrap();
    // Refused on a stopped VM, by name.
    let e = a.start_capture(0, options(&[])).await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.InvalidState", "{e}");
    a.start().await.unwrap();
    b.start().await.unwrap();
    let mut ca = Console::connect(a.console_port().await.unwrap());
    let mut cb = Console::connect(b.console_port().await.unwrap());
    let mac_a = ca.addressed("10.0.0.1");
    let mac_b = cb.addressed("10.0.0.2");

    // a: both directions, and its live stream; b: what it sends.
    let file_a = a.start_capture(0, options(&[])).await.unwrap();
    let stream_a = drain(a.open_capture(0).await.unwrap());
    let out_b = b
        .start_capture(
            0,
            options(&[
                ("Direction", Variant::from("out")),
                ("SnapLength", Variant::from(1500u32)),
            ]),
        )
        .await
        .unwrap();
    assert!(
        file_a.starts_with(&lab.dir.path().to_string_lossy().into_owned())
            && file_a.contains("/captures/eth0-")
            && file_a.ends_with(".pcap"),
        "{file_a}"
    );
    assert_eq!(a.captures().await.unwrap(), [(0, file_a.clone())]);
    let e = a.start_capture(0, options(&[])).await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.InvalidState", "{e}");
    assert!(e.to_string().contains(&file_a), "{e}");
    ping(&mut ca, "10.0.0.2");

    // Rewired: unplugged and plugged again, the capture goes on.
    a.remove_udp_tunnel(0).await.unwrap();
    a.add_udp_tunnel(0, pa, "127.0.0.1", relay.port_a())
        .await
        .unwrap();
    ping(&mut ca, "10.0.0.2");
    b.stop_capture(0).await.unwrap();
    let in_b = b
        .start_capture(0, options(&[("Direction", Variant::from("in"))]))
        .await
        .unwrap();

    // Suspended 2 s: the guest's clock stops, the records' stamps do not lose it.
    relay.hold_a.store(true, Ordering::Relaxed);
    a.suspend().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.resume().await.unwrap();
    relay.hold_a.store(false, Ordering::Relaxed);
    ping(&mut cb, "10.0.0.1");

    a.stop_capture(0).await.unwrap();
    b.stop_capture(0).await.unwrap();
    assert!(a.captures().await.unwrap().is_empty());
    assert!(!std::path::Path::new(&format!("{file_a}.part")).exists());
    let bytes_a = std::fs::read(&file_a).unwrap();
    stamped_right("a, both ways", &records(&bytes_a), &relay, &mac_a);
    let lines = tshark(&file_a, None);
    for (src, t) in [
        ("10.0.0.1", "8"),
        ("10.0.0.2", "0"),
        ("10.0.0.2", "8"),
        ("10.0.0.1", "0"),
    ] {
        assert!(icmp(&lines, src, t) >= 3, "{src} type {t} in {lines:#?}");
    }
    // The live stream, closed when the capture stopped, holds the same frames.
    let streamed = stream_a.join().unwrap();
    assert_eq!(records(&streamed), records(&bytes_a));
    assert_eq!(tshark("-", Some(&streamed)), lines);
    // Each direction holds only its half.
    for (file, sent) in [(&out_b, true), (&in_b, false)] {
        let recs = records(&std::fs::read(file).unwrap());
        stamped_right(file, &recs, &relay, &mac_b);
        let lines = tshark(file, None);
        assert!(!lines.is_empty(), "{file}");
        for l in &lines {
            assert_eq!(
                l.split(',').nth(1) == Some(mac_b.as_str()),
                sent,
                "{file}: {l}"
            );
        }
        let (src, t) = if sent {
            ("10.0.0.2", "0")
        } else {
            ("10.0.0.1", "0")
        };
        assert!(icmp(&lines, src, t) >= 3, "{file}: {lines:#?}");
    }
    assert!(records(&std::fs::read(&out_b).unwrap())
        .iter()
        .all(|(_, f)| f.len() <= 1500));

    // A daemon killed during a capture: the capture goes on under the next one.
    let again_a = a.start_capture(0, options(&[])).await.unwrap();
    ping(&mut ca, "10.0.0.2");
    let before = records(&std::fs::read(format!("{again_a}.part")).unwrap()).len();
    assert!(before > 0);
    lab.daemon.crash();
    lab.daemon.restart(&lab.bus);
    let conn = lab.daemon.connect().await;
    let m = manager(&conn).await;
    let a = vm(&conn, &m.get_vm("a").await.unwrap()).await;
    let b = vm(&conn, &m.get_vm("b").await.unwrap()).await;
    assert_eq!(a.captures().await.unwrap(), [(0, again_a.clone())]);
    let mut ca = Console::connect(a.console_port().await.unwrap());
    ping(&mut ca, "10.0.0.2");
    a.stop_capture(0).await.unwrap();
    let recs = records(&std::fs::read(&again_a).unwrap());
    assert!(recs.len() > before, "frames after the restart");
    stamped_right("a across a restart", &recs, &relay, &mac_a);
    let lines = tshark(&again_a, None);
    assert!(icmp(&lines, "10.0.0.2", "0") >= 6, "{lines:#?}");

    // No tunnel: nothing recorded until one is plugged; then capture_max_mib stops it.
    b.remove_udp_tunnel(0).await.unwrap();
    let full_b = b.start_capture(0, options(&[])).await.unwrap();
    for n in 0..20 {
        relay.inject_to_b(pb, &junk(&mac_b, 1, n, 1400));
    }
    b.add_udp_tunnel(0, pb, "127.0.0.1", relay.port_b())
        .await
        .unwrap();
    let mut n = 0;
    let stopped = eventually(Duration::from_secs(60), || {
        for _ in 0..50 {
            relay.inject_to_b(pb, &junk(&mac_b, 2, n, 1400));
            n += 1;
        }
        let b = b.clone();
        async move { b.captures().await.unwrap().is_empty() }
    })
    .await;
    assert!(stopped, "capture_max_mib stops the capture");
    let recs = records(&std::fs::read(&full_b).unwrap());
    let size: usize = 24 + recs.iter().map(|(_, f)| 16 + f.len()).sum::<usize>();
    assert!(size >= 1 << 20, "{size}");
    let tagged = |tag: u8| {
        recs.iter()
            .filter(|(_, f)| f.len() > 14 && f[14] == tag)
            .count()
    };
    assert_eq!(tagged(1), 0, "nothing recorded without a tunnel");
    assert!(tagged(2) > 500);
    stamped_right("b until full", &recs, &relay, &mac_b);
    let log = lab.daemon.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("reached capture_max_mib"))
        .unwrap_or_else(|| panic!("no log line of the full capture in {log}"));
    assert!(
        line.contains(&full_b) && line.contains("adapter=0"),
        "{line}"
    );

    // gns3-qemuctl capture -w: starts a capture, writes its stream, and stops it when
    // interrupted.
    let bad = common::ctl::ctl(&lab, &["capture", "a:0"]);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("write NODE:ethN"), "{bad:?}");
    let ctl_file = lab.dir.path().join("ctl.pcap");
    let mut ctl = std::process::Command::new(ctl_bin())
        .args(["capture", "a:eth0", "-w"])
        .arg(&ctl_file)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &lab.bus.address)
        .spawn()
        .unwrap();
    let started = eventually(Duration::from_secs(30), || {
        let a = a.clone();
        async move { a.captures().await.unwrap().len() == 1 }
    })
    .await;
    assert!(started, "gns3-qemuctl capture starts a capture");
    ping(&mut ca, "10.0.0.2");
    let written = eventually(Duration::from_secs(10), || {
        let ctl_file = ctl_file.clone();
        async move {
            let lines = tshark_so_far(&ctl_file.to_string_lossy());
            icmp(&lines, "10.0.0.2", "0") >= 3
        }
    })
    .await;
    assert!(written, "the replies reach the file as they pass");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ctl.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert!(ctl.wait().unwrap().success());
    assert!(
        a.captures().await.unwrap().is_empty(),
        "it stopped its capture"
    );
    let lines = tshark(&ctl_file.to_string_lossy(), None);
    assert!(icmp(&lines, "10.0.0.1", "8") >= 3, "{lines:#?}");

    // A capture ends with the VM, its file whole; gns3-qemuctl leaves one it did not start.
    let last_a = a.start_capture(0, options(&[])).await.unwrap();
    let mut ctl = std::process::Command::new(ctl_bin())
        .args(["capture", "a:eth0"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &lab.bus.address)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut header = [0u8; 24];
    ctl.stdout.take().unwrap().read_exact(&mut header).unwrap();
    assert_eq!(&header[..4], &0xa1b2c3d4u32.to_le_bytes());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ctl.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert!(ctl.wait().unwrap().success());
    assert_eq!(a.captures().await.unwrap(), [(0, last_a.clone())]);
    ping(&mut ca, "10.0.0.2");
    a.stop().await.unwrap();
    assert!(a.captures().await.unwrap().is_empty());
    assert!(!std::path::Path::new(&format!("{last_a}.part")).exists());
    let recs = records(&std::fs::read(&last_a).unwrap());
    assert!(!recs.is_empty());
    stamped_right("a until it stopped", &recs, &relay, &mac_a);
}
