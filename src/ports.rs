//! The port manager: which ports of a range belong to which VM. A port is reserved while a
//! VM holds it in its settings (console, monitor, a tunnel's local port), whether or not
//! QEMU is using it, so two VMs never get the same port; ports that another program holds
//! are skipped.

use std::collections::BTreeMap;
use std::net::{TcpListener, UdpSocket};
use std::ops::RangeInclusive;

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
}

impl Ports {
    pub fn new(protocol: Protocol, host: &str, range: RangeInclusive<u16>) -> Ports {
        Ports {
            protocol,
            host: host.to_string(),
            range,
            reserved: BTreeMap::new(),
        }
    }

    pub fn range(&self) -> &RangeInclusive<u16> {
        &self.range
    }

    pub fn holder(&self, port: u16) -> Option<&Holder> {
        self.reserved.get(&port)
    }

    /// Whether another program holds the port now (we try to bind it, and let go).
    fn held_elsewhere(&self, port: u16) -> Option<String> {
        let addr = (self.host.as_str(), port);
        let r = match self.protocol {
            Protocol::Tcp => TcpListener::bind(addr).map(drop),
            Protocol::Udp => UdpSocket::bind(addr).map(drop),
        };
        r.err()
            .map(|e| format!("cannot bind {}:{port} ({e})", self.host))
    }

    /// Reserves a port a client asked for, for `holder`. A VM may take over a port a
    /// client allocated: that is what allocating it was for. Returns the previous holder,
    /// for an undo.
    pub fn reserve(&mut self, port: u16, holder: Holder) -> Result<Option<Holder>, Error> {
        let previous = self.reserved.get(&port).cloned();
        match &previous {
            Some(Holder::Client) if matches!(holder, Holder::Vm(_)) => {}
            Some(other) => {
                return Err(Error::Unavailable {
                    port,
                    why: other.describe(),
                })
            }
            None => {}
        }
        if let Some(why) = self.held_elsewhere(port) {
            return Err(Error::Unavailable { port, why });
        }
        self.reserved.insert(port, holder);
        Ok(previous)
    }

    /// Reserves the lowest free port of the range.
    pub fn allocate(&mut self, holder: Holder) -> Result<u16, Error> {
        let free = self
            .range
            .clone()
            .find(|p| !self.reserved.contains_key(p) && self.held_elsewhere(*p).is_none());
        let port = free.ok_or(Error::Exhausted {
            start: *self.range.start(),
            end: *self.range.end(),
        })?;
        self.reserved.insert(port, holder);
        Ok(port)
    }

    /// Takes back a port recorded on disk, without a bind check: a QEMU that outlived the
    /// daemon may be listening on it. False if it was already taken.
    pub fn restore(&mut self, port: u16, holder: Holder) -> bool {
        if self.reserved.contains_key(&port) {
            return false;
        }
        self.reserved.insert(port, holder);
        true
    }

    pub fn release(&mut self, port: u16) {
        self.reserved.remove(&port);
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
        assert!(slot < 4 && n <= 4);
        let base = 25000 + (std::process::id() % 400) as u16 * 16 + slot * 4;
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
