//! The cables between VMs, read from their tunnels: two tunnels whose ports face each other
//! (each one's remote port the other's local port), both sent to this host, are one link, as
//! `link` wires them (Manager.Connect); a tunnel without such a partner goes outside, to a
//! UDP peer of its own. This host is the daemon's UdpHost, a loopback address or
//! `localhost`: a tunnel to another host whose ports happen to face a local one's is not
//! its cable.

use std::fmt;

/// One tunnel of a VM (Tunnels: adapter, local port, remote host, remote port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tunnel {
    pub vm: String,
    pub adapter: u32,
    pub local: u16,
    pub host: String,
    pub remote: u16,
}

/// A VM's adapter: `r1:eth0`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    pub vm: String,
    pub adapter: u32,
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:eth{}", self.vm, self.adapter)
    }
}

impl Port {
    /// `NODE:ethN`, or why it is not one.
    pub fn parse(text: &str) -> Result<Port, String> {
        text.rsplit_once(':')
            .and_then(|(vm, a)| {
                let adapter = a.strip_prefix("eth")?.parse::<u32>().ok()?;
                (!vm.is_empty()).then(|| Port {
                    vm: vm.to_string(),
                    adapter,
                })
            })
            .ok_or_else(|| format!("'{text}' is not an endpoint: write NODE:ethN, as r1:eth0"))
    }
}

/// A link as the tunnels show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// Between two adapters of VMs here, `a` the one whose VM sorts first; `ports` their
    /// local UDP ports.
    Between { a: Port, b: Port, ports: (u16, u16) },
    /// From an adapter to a UDP peer elsewhere.
    Out {
        port: Port,
        local: u16,
        host: String,
        remote: u16,
    },
}

/// As `up` and `link` name a cable: "r1:eth0 - r2:eth1", "r3:eth1 - udp:192.0.2.7:30000".
impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Link::Between { a, b, .. } => write!(f, "{a} - {b}"),
            Link::Out {
                port, host, remote, ..
            } => write!(f, "{port} - udp:{host}:{remote}"),
        }
    }
}

impl Link {
    /// The adapters of this host the link uses.
    pub fn ports(&self) -> Vec<&Port> {
        match self {
            Link::Between { a, b, .. } => vec![a, b],
            Link::Out { port, .. } => vec![port],
        }
    }
}

/// Whether a tunnel sent to `host` reaches a VM of the daemon whose UdpHost is `here`.
fn is_here(host: &str, here: &str) -> bool {
    host == here
        || host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || here.parse() == Ok(ip))
}

/// The links that `tunnels` make, in the order of their first tunnel, on a daemon whose
/// UdpHost is `here`.
pub fn links(tunnels: &[Tunnel], here: &str) -> Vec<Link> {
    let mut taken = vec![false; tunnels.len()];
    let mut out = Vec::new();
    for (i, t) in tunnels.iter().enumerate() {
        if taken[i] {
            continue;
        }
        taken[i] = true;
        let port = Port {
            vm: t.vm.clone(),
            adapter: t.adapter,
        };
        let partner = tunnels.iter().enumerate().position(|(j, u)| {
            !taken[j]
                && u.local == t.remote
                && u.remote == t.local
                && is_here(&t.host, here)
                && is_here(&u.host, here)
        });
        match partner {
            Some(j) => {
                taken[j] = true;
                let u = &tunnels[j];
                let other = Port {
                    vm: u.vm.clone(),
                    adapter: u.adapter,
                };
                let (a, b, ports) = if port <= other {
                    (port, other, (t.local, u.local))
                } else {
                    (other, port, (u.local, t.local))
                };
                out.push(Link::Between { a, b, ports });
            }
            None => out.push(Link::Out {
                port,
                local: t.local,
                host: t.host.clone(),
                remote: t.remote,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(vm: &str, adapter: u32, local: u16, host: &str, remote: u16) -> Tunnel {
        Tunnel {
            vm: vm.into(),
            adapter,
            local,
            host: host.into(),
            remote,
        }
    }

    fn p(vm: &str, adapter: u32) -> Port {
        Port {
            vm: vm.into(),
            adapter,
        }
    }

    #[test]
    fn facing_ports_are_one_link_and_the_rest_go_out() {
        let tunnels = [
            t("r2", 1, 20001, "127.0.0.1", 20000),
            t("r1", 0, 20000, "localhost", 20001),
            t("r1", 1, 20002, "192.0.2.7", 30000),
            // Only a half: its partner's remote is another port.
            t("r3", 0, 20003, "127.0.0.1", 20004),
            t("r4", 0, 20004, "127.0.0.1", 20009),
        ];
        assert_eq!(
            links(&tunnels, "127.0.0.1"),
            [
                Link::Between {
                    a: p("r1", 0),
                    b: p("r2", 1),
                    ports: (20000, 20001)
                },
                Link::Out {
                    port: p("r1", 1),
                    local: 20002,
                    host: "192.0.2.7".into(),
                    remote: 30000
                },
                Link::Out {
                    port: p("r3", 0),
                    local: 20003,
                    host: "127.0.0.1".into(),
                    remote: 20004
                },
                Link::Out {
                    port: p("r4", 0),
                    local: 20004,
                    host: "127.0.0.1".into(),
                    remote: 20009
                },
            ]
        );
    }

    #[test]
    fn a_vm_may_be_linked_to_itself() {
        let tunnels = [
            t("r1", 0, 20000, "127.0.0.1", 20001),
            t("r1", 1, 20001, "127.0.0.1", 20000),
        ];
        assert_eq!(
            links(&tunnels, "127.0.0.1"),
            [Link::Between {
                a: p("r1", 0),
                b: p("r1", 1),
                ports: (20000, 20001)
            }]
        );
    }

    #[test]
    fn facing_ports_sent_elsewhere_are_no_link_here() {
        let tunnels = [
            t("r1", 0, 20000, "192.0.2.7", 20001),
            t("r2", 0, 20001, "192.0.2.8", 20000),
            t("r3", 0, 20002, "192.0.2.1", 20003),
            t("r4", 0, 20003, "::1", 20002),
        ];
        let out = links(&tunnels, "192.0.2.9");
        assert_eq!(out.len(), 4, "{out:?}");
        assert!(out.iter().all(|l| matches!(l, Link::Out { .. })), "{out:?}");
        // On the daemon whose UdpHost is 192.0.2.1, r3 and r4 are one cable.
        let out = links(&tunnels, "192.0.2.1");
        assert_eq!(
            out[2],
            Link::Between {
                a: p("r3", 0),
                b: p("r4", 0),
                ports: (20002, 20003)
            }
        );
        assert_eq!(out.len(), 3, "{out:?}");
    }

    #[test]
    fn endpoints_are_node_and_adapter() {
        assert_eq!(Port::parse("r1:eth2"), Ok(p("r1", 2)));
        assert_eq!(Port::parse("a:b:eth0"), Ok(p("a:b", 0)));
        assert_eq!(p("r1", 2).to_string(), "r1:eth2");
        for bad in ["r1", "r1:eth", "r1:0", ":eth0", "r1:ethx"] {
            assert!(Port::parse(bad).is_err(), "{bad}");
        }
    }
}
