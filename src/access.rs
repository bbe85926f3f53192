//! Who may reach a console or monitor the daemon serves on a loopback TCP port: root and the
//! members of [`DRIVERS`], the same people the D-Bus policy lets drive VMs. A TCP port has no
//! credentials of its own, but a connection accepted on the loopback comes from a socket on
//! this host, and the kernel's socket table (sock_diag) knows the uid that created it.
//!
//! The sock_diag messages are laid out by the rust-netlink crates (`netlink-packet-sock-diag`
//! over `netlink-sys`) rather than by `#[repr(C)]` structs of our own: they are made for this
//! exact lookup, check lengths when parsing, and leave this file without `unsafe`.

use std::ffi::CString;
use std::io;
use std::net::SocketAddr;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, TCP_LISTEN};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};
use nix::errno::Errno;
use nix::sys::socket::{setsockopt, sockopt::ReceiveTimeout};
use nix::sys::time::TimeVal;
use nix::unistd::{getgrouplist, Group, Uid, User};

/// Who may reach a console or monitor: root and the members of this group.
pub const DRIVERS: &str = "gns3";

/// The kernel answers from memory at once; this only bounds a kernel that never does.
const TIMEOUT_SECONDS: i64 = 1;

/// Each lookup has a socket of its own, so any constant tells our answer from a stray one.
const SEQUENCE: u32 = 1;

/// INET_DIAG_NOCOOKIE: we know the socket by its addresses, not by a cookie.
const NO_COOKIE: [u8; 8] = [0xff; 8];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot open a NETLINK_SOCK_DIAG socket to ask who is at the other end of a \
         connection: {0}. If the unit restricts address families, AF_NETLINK may be \
         missing from RestrictAddressFamilies="
    )]
    Open(#[source] io::Error),
    #[error("cannot set a receive timeout on the sock_diag socket: {0}")]
    Timeout(#[source] Errno),
    #[error("cannot send the sock_diag query to the kernel: {0}")]
    Send(#[source] io::Error),
    #[error("the kernel did not answer the sock_diag query within {TIMEOUT_SECONDS} s")]
    NoAnswer,
    #[error("cannot receive the kernel's sock_diag answer: {0}")]
    Receive(#[source] io::Error),
    #[error("the kernel refused the sock_diag query: {0}")]
    Refused(#[source] io::Error),
    #[error("cannot parse the kernel's sock_diag answer: {0}")]
    Malformed(String),
    #[error("the sock_diag answer is not one to our query: {0}")]
    Unexpected(&'static str),
    #[error("the kernel answered about the socket {got}, not {asked} as asked")]
    Mismatch { asked: String, got: String },
    #[error("a connection from {peer} to {local} mixes IPv4 and IPv6 addresses")]
    MixedFamilies { local: SocketAddr, peer: SocketAddr },
    #[error("cannot look up the user of uid {uid} in the user database: {source}")]
    UserLookup {
        uid: u32,
        #[source]
        source: Errno,
    },
    #[error("cannot look up the group {DRIVERS} in the group database: {0}")]
    GroupLookup(#[source] Errno),
}

/// The uid of the process that opened the other end of a TCP connection this host accepted
/// (`local` = our accepted socket's local address, `peer` = its peer address). None when the
/// kernel has no such socket (the peer is on another host, or already gone).
///
/// "Already gone" includes a peer that closed its end: the kernel keeps its socket a while,
/// an orphan and then a time-wait entry that reports uid 0, which would let anyone write,
/// close and pass for root; so only a socket that a process still holds (it has an inode)
/// counts. The uid is the one that made the socket: it stays when the socket is passed on.
///
/// A short blocking netlink round trip: async callers may wrap it in `spawn_blocking`.
pub fn peer_uid(local: SocketAddr, peer: SocketAddr) -> Result<Option<u32>, Error> {
    // A listener on `::` sees IPv4 clients as ::ffff:a.b.c.d; their sockets are IPv4 ones.
    let src = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    let dst = SocketAddr::new(local.ip().to_canonical(), local.port());
    let family = match (src, dst) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => AF_INET,
        (SocketAddr::V6(_), SocketAddr::V6(_)) => AF_INET6,
        _ => return Err(Error::MixedFamilies { local, peer }),
    };
    // The peer's socket as the kernel sees it: its source is our peer, its destination us.
    let asked = SocketId {
        source_port: src.port(),
        destination_port: dst.port(),
        source_address: src.ip(),
        destination_address: dst.ip(),
        interface_id: 0,
        cookie: NO_COOKIE,
    };
    let mut header = NetlinkHeader::default();
    // Not NLM_F_DUMP: one exact lookup, answered by the socket or by ENOENT.
    header.flags = NLM_F_REQUEST;
    header.sequence_number = SEQUENCE;
    let request = SockDiagMessage::InetRequest(InetRequest {
        family,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states: StateFlags::all(),
        socket_id: asked,
    });
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(request));
    packet.finalize();
    let mut query = vec![0; packet.buffer_len()];
    packet.serialize(&mut query);

    let socket = Socket::new(NETLINK_SOCK_DIAG).map_err(Error::Open)?;
    setsockopt(&socket, ReceiveTimeout, &TimeVal::new(TIMEOUT_SECONDS, 0))
        .map_err(Error::Timeout)?;
    let kernel = netlink_sys::SocketAddr::new(0, 0);
    socket.send_to(&query, &kernel, 0).map_err(Error::Send)?;
    // Room for the answer and the attributes the kernel adds unasked (shutdown, sockopt...).
    let mut answer = Vec::with_capacity(8192);
    let (_, from) = socket.recv_from(&mut answer, 0).map_err(|e| {
        if e.raw_os_error() == Some(libc::EAGAIN) {
            Error::NoAnswer
        } else {
            Error::Receive(e)
        }
    })?;
    if from.port_number() != 0 {
        return Err(Error::Unexpected("it does not come from the kernel"));
    }
    let message = NetlinkMessage::<SockDiagMessage>::deserialize(&answer)
        .map_err(|e| Error::Malformed(e.to_string()))?;
    if message.header.sequence_number != SEQUENCE {
        return Err(Error::Unexpected("its sequence number is not ours"));
    }
    let response = match message.payload {
        NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => response,
        NetlinkPayload::Error(error) => {
            return match error.code {
                Some(code) if code.get() == -libc::ENOENT => Ok(None),
                Some(_) => Err(Error::Refused(error.to_io())),
                None => Err(Error::Unexpected("it is an acknowledgement")),
            };
        }
        _ => return Err(Error::Unexpected("it is neither a socket nor an error")),
    };
    let id = &response.header.socket_id;
    // A v6 socket connected to a v4-mapped address answers a v4 lookup with v6 addresses.
    let got_src = SocketAddr::new(id.source_address.to_canonical(), id.source_port);
    let got_dst = SocketAddr::new(id.destination_address.to_canonical(), id.destination_port);
    // With no connection of that address, the kernel falls back to a listener on its port.
    if response.header.state == TCP_LISTEN && got_src.port() == src.port() {
        return Ok(None);
    }
    if (got_src, got_dst) != (src, dst) {
        return Err(Error::Mismatch {
            asked: format!("{src} -> {dst}"),
            got: format!("{got_src} -> {got_dst}"),
        });
    }
    if response.header.inode == 0 {
        return Ok(None);
    }
    Ok(Some(response.header.uid))
}

/// Whether `uid` may drive VMs: root, or a member of [`DRIVERS`] (its primary group or a
/// supplementary one, as `getgrouplist` reads the user database, which is what dbus-daemon's
/// group policy goes by). A group that does not exist means nobody but root, and a uid with
/// no user entry is nobody's. An error is a lookup that failed (say, an NSS service down):
/// the caller refuses and says so, rather than taking it for a plain no.
pub fn may_drive(uid: u32) -> Result<bool, Error> {
    if uid == 0 {
        return Ok(true);
    }
    let Some(group) = Group::from_name(DRIVERS).map_err(Error::GroupLookup)? else {
        return Ok(false);
    };
    let user_error = |source| Error::UserLookup { uid, source };
    let Some(user) = User::from_uid(Uid::from_raw(uid)).map_err(user_error)? else {
        return Ok(false);
    };
    let name = CString::new(user.name).map_err(|_| user_error(Errno::EINVAL))?;
    let groups = getgrouplist(&name, user.gid).map_err(user_error)?;
    Ok(groups.contains(&group.gid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::OwnedFd;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    fn euid() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    /// The accepted end's peer, looked up as the daemon will.
    fn peer_of(accepted: &TcpStream) -> Option<u32> {
        let (local, peer) = (
            accepted.local_addr().unwrap(),
            accepted.peer_addr().unwrap(),
        );
        peer_uid(local, peer).unwrap()
    }

    /// A client connected to a fresh listener on `bind` through `connect_ip`, and its
    /// accepted end.
    fn connected(bind: &str, connect_ip: &str) -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind(bind).unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = TcpStream::connect(format!("{connect_ip}:{port}")).unwrap();
        (client, listener.accept().unwrap().0)
    }

    #[test]
    fn an_ipv4_loopback_peer_is_us() {
        let (_client, accepted) = connected("127.0.0.1:0", "127.0.0.1");
        assert_eq!(peer_of(&accepted), Some(euid()));
    }

    #[test]
    fn an_ipv6_loopback_peer_is_us() {
        let (_client, accepted) = connected("[::1]:0", "[::1]");
        assert_eq!(peer_of(&accepted), Some(euid()));
    }

    #[test]
    fn a_v4_mapped_peer_is_found_whether_its_socket_is_v4_or_v6() {
        for client in ["127.0.0.1", "[::ffff:127.0.0.1]"] {
            let (_client, accepted) = connected("[::]:0", client);
            let peer = accepted.peer_addr().unwrap().ip();
            assert!(peer.to_canonical() != peer, "{peer} is not v4-mapped");
            assert_eq!(peer_of(&accepted), Some(euid()), "through {client}");
        }
    }

    #[test]
    fn a_peer_port_with_no_such_connection_is_no_one() {
        let (_client, accepted) = connected("127.0.0.1:0", "127.0.0.1");
        let local = accepted.local_addr().unwrap();
        let unused = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = unused.local_addr().unwrap();
        // What the kernel finds then is a listener on that port: not the peer either.
        assert_eq!(peer_uid(local, port).unwrap(), None);
        drop(unused);
        assert_eq!(peer_uid(local, port).unwrap(), None);
    }

    /// A client that wrote and closed is not still there to vouch for: its socket lingers,
    /// an orphan at first, then a time-wait entry that reports uid 0 whoever made it (seen
    /// for a client run as nobody), which would pass for root.
    #[test]
    fn a_peer_that_closed_its_end_is_no_one() {
        let (mut client, accepted) = connected("127.0.0.1:0", "127.0.0.1");
        client.write_all(b"quit\n").unwrap();
        drop(client);
        assert_eq!(peer_of(&accepted), None);
    }

    /// Runs `bash` as nobody with `stdin` (a pipe that keeps it alive, or the connection
    /// itself) and `script`, accepts what it connects, and looks that peer up.
    fn as_nobody(listener: &TcpListener, stdin: Stdio, script: &str) -> Option<u32> {
        let mut child = Command::new("bash")
            .args(["-c", script])
            .stdin(stdin)
            .uid(65534)
            .gid(65534)
            .spawn()
            .unwrap();
        let uid = peer_of(&listener.accept().unwrap().0);
        drop(child.stdin.take());
        let _ = child.kill();
        child.wait().unwrap();
        uid
    }

    #[test]
    fn the_uid_is_the_peers_not_ours_and_its_creators_not_its_holders() {
        if euid() != 0 {
            eprintln!("skipped: needs root to run a client as nobody");
            return;
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connects = format!("exec 3<>/dev/tcp/127.0.0.1/{port} && read -r _");
        assert_eq!(as_nobody(&listener, Stdio::piped(), &connects), Some(65534));
        // Made by root, then held only by nobody: still root's.
        let made_by_root = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let held = Stdio::from(OwnedFd::from(made_by_root));
        assert_eq!(as_nobody(&listener, held, "sleep 10"), Some(0));
    }

    #[test]
    fn root_may_drive() {
        assert!(may_drive(0).unwrap());
    }

    #[test]
    fn a_uid_without_a_user_may_not_drive() {
        assert!(!may_drive(4_000_000_000).unwrap());
    }
}
