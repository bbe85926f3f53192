//! UDP tunnels: an adapter's cable to another VM or host. Ethernet frames go out as UDP
//! datagrams from a local port to a remote host and port, and come back the same way.
//!
//! A tunnel is two netdevs joined to the adapter's hub (see `network.rs`): the UDP backend and
//! a hubport. With `dgram`, QEMU gets the socket the daemon holds on the local port
//! (`ports/held.rs`), connected to the remote end, so nobody else can bind the port or talk
//! to the VM through it, and IPv6 works (QEMU's own address parsing is IPv4 only). The older
//! `socket` netdev cannot use that socket: given one (`fd=`), QEMU 7.2 sends every frame to
//! an unset address, which the kernel refuses for IPv4 (EINVAL), so nothing goes out. It
//! gets addresses instead and binds the port itself, with SO_REUSEADDR, which lets any
//! local user bind the same port and read the VM's frames; it is only used where the
//! daemon's configuration says `allow_unsafe_tunnels = true`.

use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::binary::Capabilities;
use super::error::shown;
use super::error::{Error, Result};
pub use crate::model::Tunnel;

/// How long a remote host name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_HOST: usize = 253;

impl Tunnel {
    /// Everything that can be checked without the network.
    pub fn check(&self, vm: &str, adapters: u32) -> Result<()> {
        check_adapter(vm, self.adapter, adapters)?;
        for (what, port) in [
            ("local port", self.local_port),
            ("remote port", self.remote_port),
        ] {
            if port == 0 {
                return Err(Error::InvalidArgument(format!(
                    "the tunnel's {what} is 0; use a port from 1 to 65535 (Manager.AllocateUdpPort hands out free local ports)"
                )));
            }
        }
        check_host(&self.remote_host)
    }
}

pub fn check_adapter(vm: &str, adapter: u32, adapters: u32) -> Result<()> {
    if adapter >= adapters {
        let has = match adapters {
            0 => "no adapter".to_string(),
            1 => "1 adapter, number 0".to_string(),
            n => format!("{n} adapters, numbered 0 to {}", n - 1),
        };
        return Err(Error::InvalidArgument(format!(
            "VM '{vm}' has no adapter {adapter}: it has {has} (see its Adapters setting)"
        )));
    }
    Ok(())
}

/// An IP address, or a host name made of letters, digits, '-' and dots.
fn check_host(host: &str) -> Result<()> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let name = host.strip_suffix('.').unwrap_or(host);
    if host.len() > MAX_HOST || !name.split('.').all(label_ok) {
        return Err(Error::InvalidArgument(format!(
            "remote host '{}' is neither an IPv4 or IPv6 address (IPv6 without brackets) nor a host name",
            shown(host)
        )));
    }
    Ok(())
}

/// The QEMU netdev that carries a tunnel's datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Dgram,
    Socket,
}

impl Backend {
    /// `socket` when asked for (LegacyNetworking) or when the binary has no `dgram`.
    pub fn choose(legacy: bool, caps: &Capabilities) -> Backend {
        if legacy || !caps.netdevs.contains("dgram") {
            Backend::Socket
        } else {
            Backend::Dgram
        }
    }

    /// The backend of VM `vm`'s tunnels, if the daemon may use it: `socket` only with
    /// `allow_unsafe_tunnels` (see the top of this file).
    pub fn allowed(
        vm: &str,
        legacy: bool,
        caps: &Capabilities,
        allow_unsafe: bool,
    ) -> Result<Backend> {
        let backend = Backend::choose(legacy, caps);
        if backend == Backend::Dgram || allow_unsafe {
            return Ok(backend);
        }
        let why = if legacy {
            "it has LegacyNetworking on"
        } else {
            "its QEMU binary has no dgram netdev (QEMU before 7.2)"
        };
        Err(Error::InvalidArgument(format!(
            "VM '{vm}' would carry its UDP tunnels on QEMU's socket netdev, as {why}. That netdev \
             binds the local port itself (SO_REUSEADDR) and cannot use the socket the daemon holds, \
             so any user of this host could bind the same port and take the VM's frames. Set \
             LegacyNetworking to false with a QEMU that has dgram (7.2 or newer), or, on a host \
             without untrusted users, set allow_unsafe_tunnels = true in the daemon's configuration"
        )))
    }
}

/// The two ends of a tunnel, resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// The local address for a remote one: `udp_host`, or its counterpart of the remote's family
/// (loopback for loopback, any for any).
fn local_for(remote: IpAddr, udp_host: IpAddr) -> Option<IpAddr> {
    match (remote, udp_host) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => Some(udp_host),
        (IpAddr::V6(_), IpAddr::V4(h)) if h.is_loopback() => Some(Ipv6Addr::LOCALHOST.into()),
        (IpAddr::V6(_), IpAddr::V4(h)) if h.is_unspecified() => Some(Ipv6Addr::UNSPECIFIED.into()),
        (IpAddr::V4(_), IpAddr::V6(h)) if h.is_loopback() => Some(Ipv4Addr::LOCALHOST.into()),
        (IpAddr::V4(_), IpAddr::V6(h)) if h.is_unspecified() => Some(Ipv4Addr::UNSPECIFIED.into()),
        _ => None,
    }
}

/// Resolves the remote host, and picks the address a tunnel on `backend` can use: the
/// family of `udp_host` if the name has one, IPv4 only for `socket`.
pub async fn resolve(t: &Tunnel, backend: Backend, udp_host: IpAddr) -> Result<Endpoints> {
    let host = t.remote_host.as_str();
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => {
            let found = tokio::time::timeout(
                RESOLVE_TIMEOUT,
                tokio::net::lookup_host((host, t.remote_port)),
            )
            .await
            .map_err(|_| {
                Error::InvalidArgument(format!(
                    "remote host '{host}' did not resolve within {RESOLVE_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| {
                Error::InvalidArgument(format!("remote host '{host}' does not resolve: {e}"))
            })?;
            found.map(|a| a.ip()).collect()
        }
    };
    let usable = |ip: &&IpAddr| backend == Backend::Dgram || ip.is_ipv4();
    let same_family = addrs
        .iter()
        .filter(usable)
        .find(|ip| ip.is_ipv4() == udp_host.is_ipv4());
    let remote = same_family
        .or_else(|| addrs.iter().find(usable))
        .copied()
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "remote host '{host}' has no IPv4 address, and the socket netdev (LegacyNetworking, \
                 or a QEMU without dgram) carries IPv4 only"
            ))
        })?;
    let local = local_for(remote, udp_host).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "remote host '{host}' is {remote}, but tunnels are bound on {udp_host} (udp_host in the \
             daemon's configuration), of the other IP family"
        ))
    })?;
    Ok(Endpoints {
        local: SocketAddr::new(local, t.local_port),
        remote: SocketAddr::new(remote, t.remote_port),
    })
}

/// The local end a tunnel will most likely have, known without resolving anything: where
/// the daemon binds its port while the VM is stopped, after a restart. The daemon holds one
/// socket a port, so a tunnel whose remote is of the other family than `udp_host` has its
/// port moved there ([`local_for`]); a host name's family is known only once it resolves
/// (AddUdpTunnel, Start), which moves the socket if it must.
pub fn likely_local(t: &Tunnel, udp_host: IpAddr) -> SocketAddr {
    let ip = t
        .remote_host
        .parse::<IpAddr>()
        .ok()
        .and_then(|remote| local_for(remote, udp_host))
        .unwrap_or(udp_host);
    SocketAddr::new(ip, t.local_port)
}

/// The id of adapter `n`'s UDP netdev, also the name its socket is passed under.
pub fn tunnel_netdev(n: u32) -> String {
    format!("gns3-{n}-tunnel")
}

/// The id of the hubport joining adapter `n`'s UDP netdev to its hub.
pub fn hubport_netdev(n: u32) -> String {
    format!("gns3-{n}-hubport")
}

/// The id of the port that keeps adapter `n`'s hub taking frames while it has no tunnel and
/// its link stays up (ReplicateLinkState false). A hub whose only port is the NIC's takes
/// nothing (QEMU's hub asks its other ports whether they can receive), and the NIC's
/// frames would queue for good; this port has no peer, so QEMU drops what reaches it.
pub fn sink_netdev(n: u32) -> String {
    format!("gns3-{n}-sink")
}

/// `netdev_add` arguments of the sink.
pub fn sink_args(adapter: u32) -> Value {
    json!({ "type": "hubport", "id": sink_netdev(adapter), "hubid": adapter })
}

/// `netdev_add` arguments of the UDP netdev.
pub fn netdev_args(adapter: u32, backend: Backend, ep: &Endpoints) -> Value {
    let id = tunnel_netdev(adapter);
    match backend {
        Backend::Dgram => json!({
            "type": "dgram",
            "id": id,
            "local": { "type": "fd", "str": id },
        }),
        Backend::Socket => json!({
            "type": "socket",
            "id": id,
            "udp": ep.remote.to_string(),
            "localaddr": ep.local.to_string(),
        }),
    }
}

/// `netdev_add` arguments of the hubport.
pub fn hubport_args(adapter: u32) -> Value {
    json!({
        "type": "hubport",
        "id": hubport_netdev(adapter),
        "hubid": adapter,
        "netdev": tunnel_netdev(adapter),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel(host: &str) -> Tunnel {
        Tunnel {
            adapter: 1,
            local_port: 10001,
            remote_host: host.into(),
            remote_port: 10002,
            suspended: false,
        }
    }

    #[test]
    fn checks() {
        assert!(tunnel("127.0.0.1").check("a", 2).is_ok());
        assert!(tunnel("::1").check("a", 2).is_ok());
        assert!(tunnel("lab-host.example.").check("a", 2).is_ok());
        let e = tunnel("127.0.0.1").check("a", 1).unwrap_err().to_string();
        assert!(e.contains("no adapter 1") && e.contains("number 0"), "{e}");
        for bad in ["", "[::1]", "a b", "-x.org", "x..org", &"a".repeat(300)] {
            assert!(tunnel(bad).check("a", 2).is_err(), "{bad}");
        }
        let mut t = tunnel("h");
        t.local_port = 0;
        assert!(t
            .check("a", 2)
            .unwrap_err()
            .to_string()
            .contains("local port"));
    }

    #[test]
    fn local_end_follows_the_remote_family() {
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            local_for(v4("10.0.0.1"), v4("127.0.0.1")),
            Some(v4("127.0.0.1"))
        );
        assert_eq!(local_for(v4("::1"), v4("127.0.0.1")), Some(v4("::1")));
        assert_eq!(local_for(v4("fe80::1"), v4("0.0.0.0")), Some(v4("::")));
        assert_eq!(local_for(v4("10.0.0.1"), v4("::")), Some(v4("0.0.0.0")));
        assert_eq!(local_for(v4("::1"), v4("192.168.1.2")), None);
    }

    #[tokio::test]
    async fn resolves_for_the_backend() {
        let lo = IpAddr::from([127, 0, 0, 1]);
        let ep = resolve(&tunnel("::1"), Backend::Dgram, lo).await.unwrap();
        assert_eq!(ep.local, "[::1]:10001".parse().unwrap());
        assert_eq!(ep.remote, "[::1]:10002".parse().unwrap());
        let e = resolve(&tunnel("::1"), Backend::Socket, lo)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("IPv4 only"), "{e}");
        let ep = resolve(&tunnel("localhost"), Backend::Socket, lo)
            .await
            .unwrap();
        assert_eq!(ep.remote, "127.0.0.1:10002".parse().unwrap());
        assert!(resolve(&tunnel("no-such-host.invalid"), Backend::Dgram, lo)
            .await
            .is_err());
    }

    #[test]
    fn qmp_arguments() {
        let ep = Endpoints {
            local: "127.0.0.1:10001".parse().unwrap(),
            remote: "127.0.0.1:10002".parse().unwrap(),
        };
        assert_eq!(
            netdev_args(1, Backend::Socket, &ep),
            json!({"type": "socket", "id": "gns3-1-tunnel", "udp": "127.0.0.1:10002", "localaddr": "127.0.0.1:10001"})
        );
        assert_eq!(
            netdev_args(1, Backend::Dgram, &ep)["local"],
            json!({"type": "fd", "str": "gns3-1-tunnel"})
        );
        assert_eq!(
            sink_args(2),
            json!({"type": "hubport", "id": "gns3-2-sink", "hubid": 2})
        );
        assert_eq!(
            hubport_args(1),
            json!({"type": "hubport", "id": "gns3-1-hubport", "hubid": 1, "netdev": "gns3-1-tunnel"})
        );
    }
}
