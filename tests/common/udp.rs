//! The far ends of a tunnel, for tests that check who may use its port: another user of the
//! host trying to bind it or to send into it, and a peer that asks a guest ARP questions.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use super::users::{run_as, OUTSIDER};

/// What binding 127.0.0.1:`port` gave another user: plainly, then with SO_REUSEADDR as
/// QEMU's socket netdev binds (`bound`, or the errno's name, such as `EADDRINUSE`).
#[derive(Debug, PartialEq, Eq)]
pub struct Tried {
    pub port: u16,
    pub plain: String,
    pub reuse: String,
}

/// As [`OUTSIDER`]: tries to bind each port (then closes what it bound), sends `frame` (if
/// any) to each from a port of its own, and last sends `mark` to 127.0.0.1:`marker`, so the
/// caller knows when all of it has been sent.
fn outsider_tries(ports: &[u16], frame: &[u8], marker: u16) -> Vec<Tried> {
    let script = "import socket,sys,errno\n\
                  frame=bytes.fromhex(sys.argv[1]); marker=int(sys.argv[2])\n\
                  out=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
                  for p in map(int,sys.argv[3:]):\n  r=[]\n  for reuse in (0,1):\n    \
                  t=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n    \
                  t.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,reuse)\n    \
                  try:\n      t.bind(('127.0.0.1',p)); r.append('bound')\n    \
                  except OSError as e:\n      r.append(errno.errorcode.get(e.errno,str(e.errno)))\n    \
                  t.close()\n  \
                  if frame: out.sendto(frame,('127.0.0.1',p))\n  \
                  print(p,*r)\n\
                  out.sendto(b'mark',('127.0.0.1',marker))\n";
    let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
    let mut args = vec![
        "-c".to_string(),
        script.to_string(),
        hex,
        marker.to_string(),
    ];
    args.extend(ports.iter().map(u16::to_string));
    // The system's python: one in root's PATH (pyenv) may not be reachable to the user.
    let out = run_as(OUTSIDER, "/usr/bin/python3")
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            Tried {
                port: w[0].parse().unwrap(),
                plain: w[1].to_string(),
                reuse: w[2].to_string(),
            }
        })
        .collect()
}

/// What every port of `ports` must give another user: taken, even with SO_REUSEADDR.
pub fn all_taken(ports: &[u16]) -> Vec<Tried> {
    ports
        .iter()
        .map(|&port| Tried {
            port,
            plain: "EADDRINUSE".into(),
            reuse: "EADDRINUSE".into(),
        })
        .collect()
}

/// A socket of the test's own that learns when another process has finished sending.
struct Marker(UdpSocket);

impl Marker {
    pub fn new() -> Marker {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Marker(s)
    }

    pub fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }

    /// Waits for the mark.
    pub fn wait(&self) {
        let mut buf = [0u8; 16];
        let (n, _) = self.0.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"mark");
    }
}

/// The bytes queued on the UDP socket bound on `port`, from the kernel's table; None if
/// no IPv4 socket is bound there.
pub fn queued(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    table.lines().skip(1).find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        let local = u16::from_str_radix(w[1].split(':').nth(1)?, 16).ok()?;
        let rx = u64::from_str_radix(w[4].split(':').nth(1)?, 16).ok()?;
        (local == port).then_some(rx)
    })
}

/// Another user tries every port and sends each `frame`; returns once all of it is sent.
pub fn outsider_sends(ports: &[u16], frame: &[u8]) -> Vec<Tried> {
    let marker = Marker::new();
    let tried = outsider_tries(ports, frame, marker.port());
    marker.wait();
    tried
}

/// MAC 02:00:00:00:00:<last byte of `ip`>.
fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    [2, 0, 0, 0, 0, ip.octets()[3]]
}

/// An ARP request from `sender` for `target`, broadcast, padded to Ethernet's 60 bytes.
pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend(mac_of(sender));
    f.extend([0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend(mac_of(sender));
    f.extend(sender.octets());
    f.extend([0; 6]);
    f.extend(target.octets());
    f.resize(60, 0);
    f
}

/// To whom `frame` answers, if it is an ARP reply.
pub fn arp_reply_to(frame: &[u8]) -> Option<Ipv4Addr> {
    let is_reply = frame.len() >= 42 && frame[12..14] == [0x08, 0x06] && frame[20..22] == [0, 2];
    is_reply.then(|| Ipv4Addr::new(frame[38], frame[39], frame[40], frame[41]))
}

/// The far end of a tunnel: the socket a VM's tunnel is connected to.
pub struct Peer(pub UdpSocket);

impl Peer {
    pub fn new() -> Peer {
        Peer(UdpSocket::bind("127.0.0.1:0").unwrap())
    }

    pub fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }

    /// Asks the guest behind 127.0.0.1:`port` who has `target`, as `sender`, until the
    /// answer to `sender` comes (a few tries: the first frames after the link comes up
    /// may be lost); returns to whom every ARP reply that came meanwhile answered.
    pub fn ask(&self, port: u16, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<Ipv4Addr> {
        let mut replies = Vec::new();
        let mut buf = [0u8; 2048];
        for _ in 0..5 {
            self.0
                .send_to(&arp_request(sender, target), ("127.0.0.1", port))
                .unwrap();
            let end = Instant::now() + Duration::from_secs(3);
            while let Some(left) = end.checked_duration_since(Instant::now()) {
                self.0
                    .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                    .unwrap();
                let Ok(n) = self.0.recv(&mut buf) else { break };
                if let Some(to) = arp_reply_to(&buf[..n]) {
                    replies.push(to);
                    if to == sender {
                        return replies;
                    }
                }
            }
        }
        panic!("the guest behind port {port} never answered {sender}'s ARP request (replies: {replies:?})");
    }
}
