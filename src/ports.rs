//! The port manager: which ports of a range belong to which VM. A port is reserved while a
//! VM holds it in its settings (console, monitor, a tunnel's local port), whether or not
//! QEMU is using it, so two VMs never get the same port; ports that another program holds
//! are skipped.
//!
//! The free ports of the range are a set of their own (`free.rs`), so taking the lowest free
//! port costs a lookup in it, whatever the number of VMs; only ports another program holds
//! are tried and passed over.
//!
//! A UDP port is more than a reservation: the daemon binds it when it is taken and holds
//! that socket until the port is released (`held.rs`), and a tunnel's QEMU gets that very
//! socket. One descriptor a port, in the daemon.

mod free;
mod held;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs, UdpSocket};
use std::ops::RangeInclusive;

use free::Free;
use held::Held;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("port {port} is taken: {why}")]
    Unavailable { port: u16, why: String },
    #[error("no free port is left in {start}-{end}; widen the range in the daemon's configuration or delete VMs")]
    Exhausted { start: u16, end: u16 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// Who holds a reserved port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// A VM of this daemon, by id.
    Vm(String),
    /// A client that allocated it (Manager.AllocateUdpPort) and has not used it in a
    /// tunnel yet; the first VM that does takes it over.
    Client,
}

impl Holder {
    fn describe(&self) -> String {
        match self {
            Holder::Vm(id) => format!("VM {id} of this daemon has it"),
            Holder::Client => "a client allocated it and has not released it".into(),
        }
    }
}

#[derive(Debug)]
pub struct Ports {
    protocol: Protocol,
    host: String,
    range: RangeInclusive<u16>,
    reserved: BTreeMap<u16, Holder>,
    /// The ports of the range not reserved: what `allocate` picks from.
    free: Free,
    /// UDP only: the socket held for each reserved port.
    held: BTreeMap<u16, Held>,
}

impl Ports {
    pub fn new(protocol: Protocol, host: &str, range: RangeInclusive<u16>) -> Ports {
        Ports {
            protocol,
            host: host.to_string(),
            free: Free::new(range.clone()),
            range,
            reserved: BTreeMap::new(),
            held: BTreeMap::new(),
        }
    }

    pub fn range(&self) -> &RangeInclusive<u16> {
        &self.range
    }

    pub fn holder(&self, port: u16) -> Option<&Holder> {
        self.reserved.get(&port)
    }

    fn cannot_bind(&self, port: u16, e: impl std::fmt::Display) -> Error {
        Error::Unavailable {
            port,
            why: format!("cannot bind {}:{port} ({e})", self.host),
        }
    }

    /// The address `port` is bound on: the pool's host.
    fn address(&self, port: u16) -> Result<SocketAddr, Error> {
        (self.host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| self.cannot_bind(port, "not an IP address"))
    }

    /// Takes the port from the system: a TCP port is only tried (its listener is bound
    /// when the VM starts), a UDP port is bound and held from now on.
    fn take(&mut self, port: u16) -> Result<(), Error> {
        match self.protocol {
            Protocol::Tcp => TcpListener::bind((self.host.as_str(), port))
                .map(drop)
                .map_err(|e| self.cannot_bind(port, e)),
            Protocol::Udp => {
                let held =
                    Held::bind(self.address(port)?).map_err(|e| self.cannot_bind(port, e))?;
                self.held.insert(port, held);
                Ok(())
            }
        }
    }

    /// Reserves a port a client asked for, for `holder`. A VM may take over a port a
    /// client allocated: that is what allocating it was for. Returns the previous holder,
    /// for an undo.
    pub fn reserve(&mut self, port: u16, holder: Holder) -> Result<Option<Holder>, Error> {
        let previous = self.reserved.get(&port).cloned();
        match &previous {
            // Its socket, already held, goes with it.
            Some(Holder::Client) if matches!(holder, Holder::Vm(_)) => {}
            Some(other) => {
                return Err(Error::Unavailable {
                    port,
                    why: other.describe(),
                })
            }
            None => self.take(port)?,
        }
        self.mark(port, holder);
        Ok(previous)
    }

    fn mark(&mut self, port: u16, holder: Holder) {
        self.free.remove(port);
        self.reserved.insert(port, holder);
    }

    /// Reserves the lowest free port of the range that no other program holds.
    pub fn allocate(&mut self, holder: Holder) -> Result<u16, Error> {
        let exhausted = Error::Exhausted {
            start: *self.range.start(),
            end: *self.range.end(),
        };
        let mut from = Some(*self.range.start());
        while let Some(port) = from.and_then(|f| self.free.first_from(f)) {
            if self.take(port).is_ok() {
                self.mark(port, holder);
                return Ok(port);
            }
            // Another program's: passed over, and tried again next time.
            from = port.checked_add(1);
        }
        Err(exhausted)
    }

    /// Takes back a port recorded on disk, without a bind: a QEMU that outlived the daemon
    /// may have it. A UDP port is held away until [`Ports::bind_at`] or [`Ports::park`].
    /// False if it was already taken.
    pub fn restore(&mut self, port: u16, holder: Holder) -> bool {
        if self.reserved.contains_key(&port) {
            return false;
        }
        if self.protocol == Protocol::Udp {
            if let Ok(at) = self.address(port) {
                self.held.insert(port, Held::away(at));
            }
        }
        self.mark(port, holder);
        true
    }

    /// Gives a port back to who held it before a change that did not happen (a client's
    /// allocation a tunnel was to take over), socket and all, deaf again.
    pub fn hand_back(&mut self, port: u16, holder: Holder) {
        if let Some(h) = self.held.get_mut(&port) {
            if let Err(e) = h.park() {
                tracing::warn!(port, "cannot take back the socket of UDP port {port}: {e}");
            }
        }
        self.mark(port, holder);
    }

    pub fn release(&mut self, port: u16) {
        if self.reserved.remove(&port).is_some() && self.range.contains(&port) {
            self.free.insert(port);
        }
        self.held.remove(&port);
    }

    fn held_mut(&mut self, port: u16) -> Result<&mut Held, Error> {
        self.held.get_mut(&port).ok_or_else(|| Error::Unavailable {
            port,
            why: "the daemon holds no socket on it".into(),
        })
    }

    /// Makes sure the daemon has UDP port `port` bound on `at` (a tunnel's local end).
    pub fn bind_at(&mut self, port: u16, at: SocketAddr) -> Result<(), Error> {
        self.held_mut(port)?
            .bind_at(at)
            .map_err(|e| Error::Unavailable {
                port,
                why: format!("cannot bind {at} ({e})"),
            })
    }

    /// The held socket of UDP port `port` (see [`Ports::bind_at`]), connected to `remote`:
    /// a copy for QEMU.
    pub fn lend(&mut self, port: u16, remote: SocketAddr) -> std::io::Result<UdpSocket> {
        match self.held.get_mut(&port) {
            Some(held) => held.lend(remote),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the port is not reserved",
            )),
        }
    }

    /// QEMU no longer uses UDP port `port`: its socket is deaf again (bound again, if a
    /// QEMU had the only one).
    pub fn park(&mut self, port: u16) -> Result<(), Error> {
        let held = self.held_mut(port)?;
        let at = held.at();
        held.park().map_err(|e| Error::Unavailable {
            port,
            why: format!("cannot bind {at} again ({e})"),
        })
    }

    /// Closes the daemon's socket on UDP port `port`, for a QEMU that binds it itself.
    pub fn let_go(&mut self, port: u16) {
        if let Some(h) = self.held.get_mut(&port) {
            h.let_go();
        }
    }

    /// Whether the daemon has UDP port `port` bound now.
    pub fn is_bound(&self, port: u16) -> bool {
        self.held.get(&port).is_some_and(Held::is_bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block of `n` ports for the test numbered `slot`: tests run in parallel, so each
    /// has its own block, and blocks sit below Linux's ephemeral range (32768 and up), where
    /// outgoing connections of other programs do not land, and above the integration tests'
    /// ranges.
    fn free_range(slot: u16, n: u16) -> RangeInclusive<u16> {
        assert!(slot < 6 && n <= 4);
        let base = 25000 + (std::process::id() % 250) as u16 * 24 + slot * 4;
        base..=base + n - 1
    }

    #[test]
    fn allocates_reserves_releases() {
        let range = free_range(0, 4);
        let mut p = Ports::new(Protocol::Tcp, "127.0.0.1", range.clone());
        let a = p.allocate(vm("a")).unwrap();
        let b = p.allocate(vm("b")).unwrap();
        assert_ne!(a, b);
        let e = p.reserve(a, vm("b")).unwrap_err().to_string();
        assert!(e.contains("VM a"), "{e}");
        p.release(a);
        assert_eq!(p.reserve(a, vm("b")).unwrap(), None);
        assert_eq!(p.holder(a), Some(&vm("b")));
        assert!(p.restore(*range.end(), vm("c")));
        assert!(!p.restore(*range.end(), vm("d")));
    }

    fn vm(id: &str) -> Holder {
        Holder::Vm(id.into())
    }

    #[test]
    fn a_vm_takes_over_what_a_client_allocated() {
        let range = free_range(1, 2);
        let mut p = Ports::new(Protocol::Udp, "127.0.0.1", range.clone());
        let a = p.allocate(Holder::Client).unwrap();
        assert!(p.reserve(a, Holder::Client).is_err());
        assert_eq!(p.reserve(a, vm("x")).unwrap(), Some(Holder::Client));
        assert!(p.reserve(a, vm("y")).is_err());
    }

    #[test]
    fn udp_ports_are_held_from_taken_to_released() {
        let range = free_range(4, 4);
        let mut p = Ports::new(Protocol::Udp, "127.0.0.1", range.clone());
        let bind = |port: u16| UdpSocket::bind(("127.0.0.1", port));
        let a = p.allocate(Holder::Client).unwrap();
        assert!(bind(a).is_err(), "allocated: held");
        p.reserve(a, vm("x")).unwrap();
        p.hand_back(a, Holder::Client);
        assert!(
            p.is_bound(a) && bind(a).is_err(),
            "handed back with its socket"
        );
        p.release(a);
        assert!(!p.is_bound(a));
        drop(bind(a).unwrap());

        // Recorded on disk: not bound until told where.
        let b = range.end() - 1;
        assert!(p.restore(b, vm("y")));
        assert!(!p.is_bound(b) && bind(b).is_ok());
        p.park(b).unwrap();
        assert!(bind(b).is_err(), "bound again");
        p.let_go(b);
        drop(bind(b).unwrap());
        let at: SocketAddr = ("127.0.0.1".parse::<std::net::IpAddr>().unwrap(), b).into();
        p.bind_at(b, at).unwrap();
        assert!(bind(b).is_err());
        let e = p.bind_at(7, at).unwrap_err().to_string();
        assert!(e.contains("holds no socket"), "{e}");
    }

    #[test]
    fn skips_ports_held_by_another_program() {
        let range = free_range(2, 3);
        let held = TcpListener::bind(("127.0.0.1", *range.start())).unwrap();
        let mut p = Ports::new(Protocol::Tcp, "127.0.0.1", range.clone());
        let e = p.reserve(*range.start(), vm("a")).unwrap_err().to_string();
        assert!(e.contains("cannot bind"), "{e}");
        assert_eq!(p.allocate(vm("a")).unwrap(), range.start() + 1);
        drop(held);
    }

    #[test]
    fn the_lowest_free_port_comes_back_after_a_release() {
        let range = free_range(5, 4);
        let mut p = Ports::new(Protocol::Tcp, "127.0.0.1", range.clone());
        let start = *range.start();
        assert!(p.restore(start + 1, vm("r")));
        assert_eq!(p.reserve(start + 3, vm("q")).unwrap(), None);
        assert_eq!(p.allocate(vm("a")).unwrap(), start);
        assert_eq!(p.allocate(vm("b")).unwrap(), start + 2);
        assert!(p.allocate(vm("c")).is_err(), "all four held");
        p.release(start + 1);
        p.release(start + 1);
        assert_eq!(p.allocate(vm("c")).unwrap(), start + 1);
        assert_eq!(p.free.len(), 0);
        // A port outside the range never joins the free set.
        p.release(*range.end() + 7);
        assert_eq!(p.free.len(), 0);
    }

    #[test]
    fn exhaustion_names_the_range() {
        let range = free_range(3, 1);
        let mut p = Ports::new(Protocol::Udp, "127.0.0.1", range.clone());
        p.allocate(Holder::Client).unwrap();
        let e = p.allocate(Holder::Client).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{}-{}", range.start(), range.end())),
            "{e}"
        );
    }
}
