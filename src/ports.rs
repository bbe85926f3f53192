//! The port manager: which ports of a range belong to which VM. A port is reserved while a
//! VM holds it in its settings, whether or not QEMU is listening on it, so two VMs never get
//! the same console; ports that another program holds are skipped.

use std::collections::BTreeSet;
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

#[derive(Debug)]
pub struct Ports {
    protocol: Protocol,
    host: String,
    range: RangeInclusive<u16>,
    reserved: BTreeSet<u16>,
}

impl Ports {
    pub fn new(protocol: Protocol, host: &str, range: RangeInclusive<u16>) -> Ports {
        Ports {
            protocol,
            host: host.to_string(),
            range,
            reserved: BTreeSet::new(),
        }
    }

    pub fn range(&self) -> &RangeInclusive<u16> {
        &self.range
    }

    pub fn is_reserved(&self, port: u16) -> bool {
        self.reserved.contains(&port)
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

    /// Reserves a port a client asked for.
    pub fn reserve(&mut self, port: u16) -> Result<(), Error> {
        if self.reserved.contains(&port) {
            return Err(Error::Unavailable {
                port,
                why: "another VM of this daemon has it".into(),
            });
        }
        if let Some(why) = self.held_elsewhere(port) {
            return Err(Error::Unavailable { port, why });
        }
        self.reserved.insert(port);
        Ok(())
    }

    /// Reserves the lowest free port of the range.
    pub fn allocate(&mut self) -> Result<u16, Error> {
        let free = self
            .range
            .clone()
            .find(|p| !self.reserved.contains(p) && self.held_elsewhere(*p).is_none());
        let port = free.ok_or(Error::Exhausted {
            start: *self.range.start(),
            end: *self.range.end(),
        })?;
        self.reserved.insert(port);
        Ok(port)
    }

    /// Takes back a port recorded on disk, without a bind check: a QEMU that outlived the
    /// daemon may be listening on it. False if it was already taken.
    pub fn restore(&mut self, port: u16) -> bool {
        self.reserved.insert(port)
    }

    pub fn release(&mut self, port: u16) {
        self.reserved.remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_range(n: u16) -> RangeInclusive<u16> {
        // Ports of an ephemeral listener are free at the time of the test; take a block
        // around one well away from the usual ranges.
        let base = 42000 + (std::process::id() % 1000) as u16 * 10;
        base..=base + n - 1
    }

    #[test]
    fn allocates_reserves_releases() {
        let range = free_range(4);
        let mut p = Ports::new(Protocol::Tcp, "127.0.0.1", range.clone());
        let a = p.allocate().unwrap();
        let b = p.allocate().unwrap();
        assert_ne!(a, b);
        assert!(matches!(p.reserve(a), Err(Error::Unavailable { .. })));
        p.release(a);
        p.reserve(a).unwrap();
        assert!(p.restore(*range.end()));
        assert!(!p.restore(*range.end()));
    }

    #[test]
    fn skips_ports_held_by_another_program() {
        let range = free_range(3);
        let held = TcpListener::bind(("127.0.0.1", *range.start())).unwrap();
        let mut p = Ports::new(Protocol::Tcp, "127.0.0.1", range.clone());
        let e = p.reserve(*range.start()).unwrap_err().to_string();
        assert!(e.contains("cannot bind"), "{e}");
        assert_eq!(p.allocate().unwrap(), range.start() + 1);
        drop(held);
    }

    #[test]
    fn exhaustion_names_the_range() {
        let range = free_range(1);
        let mut p = Ports::new(Protocol::Udp, "127.0.0.1", range.clone());
        p.allocate().unwrap();
        let e = p.allocate().unwrap_err().to_string();
        assert!(
            e.contains(&format!("{}-{}", range.start(), range.end())),
            "{e}"
        );
    }
}
