//! Cables between two of the daemon's VMs, made and unmade in one call: two UDP ports from
//! the pool, each VM's tunnel facing the other's on [`udp_host`], set through the actors
//! (live where QEMU runs). A cable is whole or not there: a refused half puts the first one
//! back, and the ports taken are given back.
//!
//! A VM's tunnel is "local", and has a peer, when another tunnel of the daemon's VMs faces
//! it: its local port is this one's remote port and the other way round, and its remote host
//! is this host. Rewiring an adapter unplugs its old peer once the new cable is whole, so no
//! VM is left sending into a port nobody reads.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Manager;
use crate::ports::Holder;
use crate::vm::tunnel::check_adapter;
use crate::vm::{Error, Handle, Pool, Result, Tunnel};

/// One end of a cable: a VM (by id) and one of its adapters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct End<'a> {
    pub vm: &'a str,
    pub adapter: u32,
}

/// Where a tunnel of this daemon's VMs is reached from this host: `udp_host`, or the
/// loopback of its family when it is a wildcard (which answers there too).
pub fn udp_host(configured: IpAddr) -> IpAddr {
    match configured {
        IpAddr::V4(a) if a.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V6(a) if a.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
        other => other,
    }
}

/// Whether `host`, a tunnel's remote host, is this host as its tunnels are reached.
fn is_here(host: &str, configured: IpAddr) -> bool {
    match host.parse::<IpAddr>() {
        Ok(ip) => ip == configured || ip == udp_host(configured) || ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// A tunnel of a VM, as its view shows it.
type Seen = (u32, u16, String, u16);

impl Manager {
    /// See [`udp_host`].
    pub fn udp_host(&self) -> IpAddr {
        udp_host(self.ctx.udp_host)
    }

    fn by_id(&self, id: &str) -> Result<Handle> {
        crate::vm::lock(&self.vms).get(id).cloned().ok_or_else(|| {
            Error::NotFound(format!(
                "no VM of this daemon has the object path of '{}'; give the path of one of its \
                 VMs (Manager.ListVMs)",
                crate::vm::error::shown(id)
            ))
        })
    }

    /// The VM of `end`, once its adapter is known to be one it has.
    fn checked(&self, end: End<'_>) -> Result<Handle> {
        let h = self.by_id(end.vm)?;
        let (name, adapters) = {
            let v = h.view();
            (v.settings.name.clone(), v.settings.adapters)
        };
        check_adapter(&name, end.adapter, adapters)?;
        Ok(h)
    }

    /// The tunnel on `end`'s adapter, if it has one.
    fn tunnel_of(h: &Handle, adapter: u32) -> Option<Seen> {
        h.view().tunnels.iter().find(|t| t.0 == adapter).cloned()
    }

    /// The VM and adapter whose tunnel faces `t` on this host, if one does.
    fn peer_of(&self, t: &Seen) -> Option<(Handle, u32)> {
        if !is_here(&t.2, self.ctx.udp_host) {
            return None;
        }
        self.list().into_iter().find_map(|h| {
            let found = h
                .view()
                .tunnels
                .iter()
                .find(|u| u.1 == t.3 && u.3 == t.1 && is_here(&u.2, self.ctx.udp_host))
                .map(|u| u.0);
            found.map(|adapter| (h, adapter))
        })
    }

    /// Wires `a` to `b`: see the top of this file. Connecting a pair already wired to each
    /// other does nothing.
    pub async fn connect(&self, a: End<'_>, b: End<'_>) -> Result<()> {
        let _one_at_a_time = self.wiring.lock().await;
        let (ha, hb) = (self.checked(a)?, self.checked(b)?);
        if a == b {
            return Err(Error::InvalidArgument(format!(
                "both ends are adapter {} of VM '{}'; a cable joins two different adapters",
                a.adapter,
                ha.view().settings.name
            )));
        }
        let (old_a, old_b) = (
            Self::tunnel_of(&ha, a.adapter),
            Self::tunnel_of(&hb, b.adapter),
        );
        let suspended_a = Self::suspended_of(&ha, a.adapter);
        let host = self.udp_host().to_string();
        if let (Some(ta), Some(tb)) = (&old_a, &old_b) {
            if ta.1 == tb.3 && ta.3 == tb.1 && ta.2 == host && tb.2 == host {
                return Ok(());
            }
        }
        // Found now: once the new cable is made, the old ends no longer show whom they faced.
        let peers: Vec<(Handle, u32, Seen)> = [&old_a, &old_b]
            .into_iter()
            .flatten()
            .filter_map(|t| {
                self.peer_of(t).and_then(|(h, adapter)| {
                    Self::tunnel_of(&h, adapter).map(|seen| (h, adapter, seen))
                })
            })
            .collect();
        let (pa, pb) = self.two_ports()?;
        let ta = Tunnel {
            adapter: a.adapter,
            local_port: pa,
            remote_host: host.clone(),
            remote_port: pb,
            suspended: false,
        };
        let tb = Tunnel {
            adapter: b.adapter,
            local_port: pb,
            remote_host: host,
            remote_port: pa,
            suspended: false,
        };
        if let Err(e) = ha.add_tunnel(ta).await {
            self.release_held(&[pa, pb]);
            return Err(e);
        }
        if let Err(e) = hb.add_tunnel(tb).await {
            // Taking a's new tunnel away gives pa back; pb is still the pool's hold.
            self.put_back(&ha, a.adapter, old_a, suspended_a).await;
            self.release_held(&[pa, pb]);
            return Err(e);
        }
        for (h, adapter, seen) in peers {
            let (peer_id, peer_name) = {
                let v = h.view();
                (v.id.clone(), v.settings.name.clone())
            };
            let rewired = (peer_id == a.vm && adapter == a.adapter)
                || (peer_id == b.vm && adapter == b.adapter);
            // Connect and Disconnect run one at a time, but AddUdpTunnel or RemoveUdpTunnel
            // may have changed the peer since it was found: only the tunnel seen goes.
            if rewired || Self::tunnel_of(&h, adapter).as_ref() != Some(&seen) {
                continue;
            }
            if let Err(e) = h.remove_tunnel(adapter).await {
                tracing::warn!(vm_name = %peer_name, adapter, "cannot unplug the old peer of a rewired adapter: {e}");
            }
        }
        Ok(())
    }

    /// Unwires `end`: its tunnel and its peer's. An adapter without a tunnel: nothing to do.
    pub async fn disconnect(&self, end: End<'_>) -> Result<()> {
        let _one_at_a_time = self.wiring.lock().await;
        let h = self.checked(end)?;
        let Some(t) = Self::tunnel_of(&h, end.adapter) else {
            return Ok(());
        };
        let peer = self.peer_of(&t);
        h.remove_tunnel(end.adapter).await?;
        if let Some((p, adapter)) = peer {
            p.remove_tunnel(adapter).await?;
        }
        Ok(())
    }

    /// Two ports of the pool, held as a client's allocation until the tunnels take them.
    fn two_ports(&self) -> Result<(u16, u16)> {
        let mut ports = self.ctx.ports(Pool::Udp);
        let first = ports.allocate(Holder::Client)?;
        match ports.allocate(Holder::Client) {
            Ok(second) => Ok((first, second)),
            Err(e) => {
                ports.release(first);
                Err(e.into())
            }
        }
    }

    /// Releases those of `ports` still held as a client's allocation (a tunnel's are its VM's).
    fn release_held(&self, ports: &[u16]) {
        let mut pool = self.ctx.ports(Pool::Udp);
        for p in ports {
            if pool.holder(*p) == Some(&Holder::Client) {
                pool.release(*p);
            }
        }
    }

    /// Whether VM `h`'s adapter has a suspended cable (SetLinkSuspended).
    fn suspended_of(h: &Handle, adapter: u32) -> bool {
        h.view().links.iter().any(|l| l.0 == adapter && l.2)
    }

    /// Gives VM `h`'s adapter the tunnel it had before a Connect that failed half way,
    /// suspended again if it was.
    async fn put_back(&self, h: &Handle, adapter: u32, old: Option<Seen>, suspended: bool) {
        let back = match old {
            Some((adapter, local_port, remote_host, remote_port)) => {
                let tunnel = Tunnel {
                    adapter,
                    local_port,
                    remote_host,
                    remote_port,
                    suspended: false,
                };
                match h.add_tunnel(tunnel).await {
                    Ok(()) if suspended => h.set_link_suspended(adapter, true).await,
                    other => other,
                }
            }
            None => h.remove_tunnel(adapter).await,
        };
        if let Err(e) = back {
            let name = h.view().settings.name.clone();
            tracing::error!(vm_name = %name, adapter, "cannot put back the tunnel a refused Connect replaced: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_wildcard_is_reached_on_the_loopback_of_its_family() {
        assert_eq!(udp_host(ip("0.0.0.0")), ip("127.0.0.1"));
        assert_eq!(udp_host(ip("::")), ip("::1"));
        assert_eq!(udp_host(ip("127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(udp_host(ip("192.168.1.2")), ip("192.168.1.2"));
        assert_eq!(udp_host(ip("fe80::1")), ip("fe80::1"));
    }

    #[test]
    fn this_host_is_its_address_its_loopback_and_localhost() {
        let here = ip("192.168.1.2");
        for host in ["192.168.1.2", "127.0.0.1", "::1", "localhost", "LOCALHOST"] {
            assert!(is_here(host, here), "{host}");
        }
        for host in ["192.168.1.3", "0.0.0.0", "lab-host.example"] {
            assert!(!is_here(host, here), "{host}");
        }
        assert!(is_here("127.0.0.1", ip("0.0.0.0")));
    }
}
