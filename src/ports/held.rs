//! The socket the daemon holds on a UDP port it has handed out or that a VM's tunnel names,
//! so that no other program can bind the port, from when it is taken until it is released.
//!
//! A port's socket is in one of three conditions:
//! - deaf: bound, unconnected, and dropping every datagram in the kernel before it is
//!   queued (a socket filter that accepts nothing). Nobody reads it, so anything it kept
//!   would only cost memory and reach the guest later. This is a port a client allocated,
//!   or the tunnel port of a stopped VM.
//! - lent: connected to the tunnel's remote end, filter off, and handed to QEMU, which has
//!   a copy of this very socket. The kernel gives it only datagrams from the remote, so
//!   nobody else can talk to the VM; the daemon keeps its copy, so the port stays taken
//!   when QEMU lets go.
//! - away: not bound by the daemon, because a QEMU has the only socket on the port (one a
//!   previous daemon handed it, or QEMU's own `socket` netdev), or because binding it
//!   failed. It is bound again where it was as soon as the port is parked.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

#[derive(Debug)]
pub struct Held {
    socket: Option<UdpSocket>,
    /// The address the socket is bound on (or is to be bound on again, while away). For a
    /// wildcard address, a connected socket's own address is narrower; this is not.
    at: SocketAddr,
}

impl Held {
    /// Binds `at`, deaf.
    pub fn bind(at: SocketAddr) -> io::Result<Held> {
        Ok(Held {
            socket: Some(deaf_socket(at)?),
            at,
        })
    }

    /// A port whose socket the daemon does not have; [`Held::park`] binds it at `at`.
    pub fn away(at: SocketAddr) -> Held {
        Held { socket: None, at }
    }

    pub fn is_bound(&self) -> bool {
        self.socket.is_some()
    }

    pub fn at(&self) -> SocketAddr {
        self.at
    }

    /// Makes sure the socket is bound on `at`: bound again if away, or moved there if bound
    /// elsewhere (a tunnel whose remote is of the other IP family than `udp_host`). A new
    /// socket is bound before the old one is closed, so the port is never free in between,
    /// except where the two overlap: `::` also covers IPv4, so moving between `0.0.0.0`
    /// and `::` closes the old one first.
    pub fn bind_at(&mut self, at: SocketAddr) -> io::Result<()> {
        if self.at == at && self.socket.is_some() {
            return Ok(());
        }
        let overlap = at.ip().is_unspecified() && self.at.ip().is_unspecified();
        let socket = match deaf_socket(at) {
            Ok(s) => s,
            Err(e) if overlap && e.kind() == io::ErrorKind::AddrInUse && self.is_bound() => {
                self.socket = None;
                match deaf_socket(at) {
                    Ok(s) => s,
                    Err(e) => {
                        self.socket = deaf_socket(self.at).ok();
                        return Err(e);
                    }
                }
            }
            Err(e) => return Err(e),
        };
        self.socket = Some(socket);
        self.at = at;
        Ok(())
    }

    /// Connects the socket to `remote` and lets it hear again; returns a copy for QEMU.
    /// What was queued before the connect (from an earlier remote) is thrown away.
    pub fn lend(&mut self, remote: SocketAddr) -> io::Result<UdpSocket> {
        let socket = self.socket.as_ref().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotConnected, "the daemon does not hold it")
        })?;
        socket.connect(remote)?;
        drain(socket.as_raw_fd());
        set_filter(socket.as_raw_fd(), None)?;
        socket.try_clone()
    }

    /// Takes the socket back from QEMU (or binds it again if away): deaf, unconnected and
    /// empty.
    pub fn park(&mut self) -> io::Result<()> {
        let Some(socket) = &self.socket else {
            self.socket = Some(deaf_socket(self.at)?);
            return Ok(());
        };
        let fd = socket.as_raw_fd();
        set_filter(fd, Some(&DROP_ALL))?;
        disconnect(fd)?;
        drain(fd);
        Ok(())
    }

    /// Closes the daemon's socket, for QEMU's `socket` netdev, which binds the port itself.
    pub fn let_go(&mut self) {
        self.socket = None;
    }
}

/// One instruction, "accept 0 bytes": every datagram is dropped before it is queued.
const DROP_ALL: [libc::sock_filter; 1] = [libc::sock_filter {
    code: (libc::BPF_RET | libc::BPF_K) as u16,
    jt: 0,
    jf: 0,
    k: 0,
}];

fn deaf_socket(at: SocketAddr) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(at)?;
    set_filter(socket.as_raw_fd(), Some(&DROP_ALL))?;
    // Datagrams that arrived between the bind and the filter.
    drain(socket.as_raw_fd());
    Ok(socket)
}

/// Attaches `filter` to the socket, or detaches the one it has.
fn set_filter(fd: RawFd, filter: Option<&[libc::sock_filter]>) -> io::Result<()> {
    let r = match filter {
        Some(f) => {
            let prog = libc::sock_fprog {
                len: f.len() as u16,
                filter: f.as_ptr().cast_mut(),
            };
            // SAFETY: `prog` points at `f`, which outlives the call; the kernel copies the
            // program and never writes through the pointer.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_ATTACH_FILTER,
                    std::ptr::from_ref(&prog).cast(),
                    size_of::<libc::sock_fprog>() as libc::socklen_t,
                )
            }
        }
        None => {
            let unused: libc::c_int = 0;
            // SAFETY: the option takes no value; a valid int is passed for its length.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_DETACH_FILTER,
                    std::ptr::from_ref(&unused).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        }
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    // Detaching where no filter is attached.
    if filter.is_none() && e.raw_os_error() == Some(libc::ENOENT) {
        return Ok(());
    }
    Err(e)
}

/// Dissolves the socket's association with its remote (connect to AF_UNSPEC), so a
/// wildcard-bound socket is again bound on every address, as it was.
fn disconnect(fd: RawFd) -> io::Result<()> {
    let unspec = libc::sockaddr {
        sa_family: libc::AF_UNSPEC as libc::sa_family_t,
        sa_data: [0; 14],
    };
    // SAFETY: `unspec` is a complete sockaddr of the length given.
    let r = unsafe { libc::connect(fd, &unspec, size_of::<libc::sockaddr>() as libc::socklen_t) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Throws away what is queued on the socket, without blocking. Bounded: a remote that
/// keeps sending cannot hold the daemon here.
fn drain(fd: RawFd) {
    use nix::errno::Errno;
    use nix::sys::socket::{recv, MsgFlags};
    // A datagram longer than the buffer is cut, and the rest of it dropped.
    let mut byte = [0u8; 1];
    for _ in 0..4096 {
        match recv(fd, &mut byte, MsgFlags::MSG_DONTWAIT) {
            // An ICMP error of an earlier send is reported once, then the queue goes on.
            Ok(_) | Err(Errno::ECONNREFUSED | Errno::EHOSTUNREACH | Errno::ENETUNREACH) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn lo() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    fn free_port() -> SocketAddr {
        UdpSocket::bind(lo()).unwrap().local_addr().unwrap()
    }

    /// The next datagram `socket` gets (loopback delivers at once; the timeout is a bound).
    fn next(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        (buf[..n].to_vec(), from)
    }

    /// Whether nothing is queued on `socket` now. Loopback keeps the order of what one
    /// thread sends, so once a datagram sent later has arrived, an earlier one that was
    /// let in would be queued already.
    fn empty(socket: &UdpSocket) -> bool {
        use nix::sys::socket::{recv, MsgFlags};
        recv(socket.as_raw_fd(), &mut [0u8; 64], MsgFlags::MSG_DONTWAIT).is_err()
    }

    #[test]
    fn deaf_while_held_hears_only_its_remote_while_lent() {
        // A port of its own, as the daemon binds: a socket bound on port 0 would lose its
        // port when disconnected.
        let port = free_port();
        let mut held = Held::bind(port).unwrap();
        let e = UdpSocket::bind(port).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);

        let remote = UdpSocket::bind(lo()).unwrap();
        let stranger = UdpSocket::bind(lo()).unwrap();
        let marker = UdpSocket::bind(lo()).unwrap();
        stranger.send_to(b"early", port).unwrap();
        stranger
            .send_to(b"mark", marker.local_addr().unwrap())
            .unwrap();
        assert_eq!(next(&marker).0, b"mark");
        let lent = held.lend(remote.local_addr().unwrap()).unwrap();
        assert!(empty(&lent), "nothing was kept while deaf");
        stranger.send_to(b"stranger", port).unwrap();
        remote.send_to(b"remote", port).unwrap();
        assert_eq!(
            next(&lent),
            (b"remote".to_vec(), remote.local_addr().unwrap())
        );
        assert!(empty(&lent), "the stranger's datagram was not delivered");
        lent.send(b"out").unwrap();
        assert_eq!(next(&remote).0, b"out");
        drop(lent);

        remote.send_to(b"late", port).unwrap();
        held.park().unwrap();
        let socket = held.socket.as_ref().unwrap();
        assert!(socket.peer_addr().is_err(), "parked: connected to nothing");
        remote.send_to(b"parked", port).unwrap();
        remote
            .send_to(b"mark", marker.local_addr().unwrap())
            .unwrap();
        assert_eq!(next(&marker).0, b"mark");
        assert!(empty(socket), "parked: deaf and empty");
        assert!(UdpSocket::bind(port).is_err(), "still held");
    }

    #[test]
    fn away_is_bound_again_when_parked_and_moves_between_families() {
        let at = free_port();
        let mut held = Held::away(at);
        assert!(!held.is_bound());
        assert!(held.lend(at).is_err(), "nothing to lend while away");
        held.park().unwrap();
        assert!(held.is_bound() && UdpSocket::bind(at).is_err());

        let v6 = SocketAddr::new("::1".parse().unwrap(), at.port());
        held.bind_at(v6).unwrap();
        assert_eq!(held.at(), v6);
        assert!(UdpSocket::bind(v6).is_err());
        let freed = UdpSocket::bind(at);
        assert!(freed.is_ok(), "one socket a port: the IPv4 one is closed");
        held.let_go();
        assert!(!held.is_bound());
    }
}
