//! `link A:eth0 B:eth1`, `unlink A:eth0` and `links`: a cable is two tunnels whose ports face
//! each other (`crate::links`). The daemon makes it whole or not at all (Manager.Connect) and
//! unmakes both ends at once (Manager.Disconnect); a cable to a UDP peer elsewhere is one
//! tunnel, undone here if it fails. `up` wires and unwires through the same two functions.

use crate::contract::DEFAULT_ADAPTERS;
use crate::error::{Error, Result};
use crate::lab::plan::Wire;
use crate::links::{Link, Port};
use crate::output;
use crate::proxies::ManagerProxy;
use crate::snapshot::{Snapshot, Vm};

pub async fn link(conn: &zbus::Connection, a: &str, b: &str) -> Result<()> {
    let ports = [endpoint(a)?, endpoint(b)?];
    if ports[0] == ports[1] {
        return Err(Error::Link(format!("{a} cannot be linked to itself")));
    }
    let vms = Snapshot::read(conn).await?;
    for port in &ports {
        let vm = vms.vm(&port.vm)?;
        let adapters = vm.adapters(DEFAULT_ADAPTERS);
        if port.adapter >= adapters {
            return Err(Error::Link(format!(
                "{} has {adapters} adapter(s), eth0 to eth{}: raise its Adapters (stopped) \
                 with gns3-qemuctl set {} Adapters={}",
                port.vm,
                adapters.saturating_sub(1),
                port.vm,
                port.adapter + 1
            )));
        }
        if let Some(other) = vms.link_on(port) {
            return Err(Error::Link(format!(
                "{port} is linked already ({}): unlink it first with gns3-qemuctl unlink {port}",
                other
            )));
        }
    }
    let [a, b] = ports;
    wire(conn, &vms, &Wire::Between(a, b)).await
}

pub async fn unlink(conn: &zbus::Connection, end: &str) -> Result<()> {
    let port = endpoint(end)?;
    let vms = Snapshot::read(conn).await?;
    vms.vm(&port.vm)?;
    let Some(link) = vms.link_on(&port) else {
        return Err(Error::Link(format!("{port} has no link")));
    };
    unwire(
        conn,
        &vms,
        &link.ports().into_iter().cloned().collect::<Vec<_>>(),
    )
    .await
}

pub async fn list(
    conn: &zbus::Connection,
    lab: Option<&str>,
    json: bool,
    legend: bool,
) -> Result<()> {
    let vms = Snapshot::read(conn).await?;
    let ours: Vec<String> = match lab {
        Some(lab) => vms.members(lab)?,
        None => vms.vms.iter().map(Vm::name).collect(),
    };
    let links: Vec<Link> = vms
        .links()
        .into_iter()
        .filter(|l| l.ports().iter().any(|p| ours.contains(&p.vm)))
        .collect();
    if json {
        return output::print_json(&links.iter().map(link_json).collect());
    }
    let rows = links
        .iter()
        .map(|l| match l {
            Link::Between { a, b, ports } => {
                vec![
                    a.to_string(),
                    b.to_string(),
                    format!("{} {}", ports.0, ports.1),
                ]
            }
            Link::Out {
                port,
                local,
                host,
                remote,
            } => vec![
                port.to_string(),
                format!("udp:{host}:{remote}"),
                local.to_string(),
            ],
        })
        .collect();
    let mut out = output::table(&["A", "B", "PORTS"], &[], rows, legend);
    if legend {
        let n = output::count(links.len(), "link", "links");
        out.push_str(&format!("\n{n} listed.\n"));
    }
    output::print(&out)
}

fn link_json(link: &Link) -> serde_json::Value {
    match link {
        Link::Between { a, b, ports } => serde_json::json!({
            "a": a.to_string(), "b": b.to_string(), "ports": [ports.0, ports.1],
        }),
        Link::Out {
            port,
            local,
            host,
            remote,
        } => serde_json::json!({
            "a": port.to_string(), "udp": {"host": host, "port": remote}, "ports": [local],
        }),
    }
}

pub(super) fn endpoint(text: &str) -> Result<Port> {
    Port::parse(text).map_err(Error::Link)
}

/// Makes the cable `wire`: both tunnels, or none (and no port kept).
pub(super) async fn wire(conn: &zbus::Connection, vms: &Snapshot, wire: &Wire) -> Result<()> {
    let manager = super::manager(conn).await?;
    let failed = Error::call(format!("link {wire}"));
    match wire {
        Wire::Between(a, b) => {
            let (va, vb) = (&vms.vm(&a.vm)?.path, &vms.vm(&b.vm)?.path);
            manager
                .connect(va, a.adapter, vb, b.adapter)
                .await
                .map_err(failed)
        }
        Wire::Out {
            port,
            host,
            remote,
            local,
        } => {
            let vm = vms.proxy(conn, &port.vm).await?;
            let (local, allocated) = match local {
                Some(l) => (*l, false),
                None => (
                    manager
                        .allocate_udp_port()
                        .await
                        .map_err(Error::call(format!("link {wire}")))?,
                    true,
                ),
            };
            if let Err(e) = vm.add_udp_tunnel(port.adapter, local, host, *remote).await {
                if allocated {
                    release(&manager, &[local]).await;
                }
                return Err(failed(e));
            }
            Ok(())
        }
    }
}

/// Gives back ports a failed wiring had taken; the error told is the wiring's.
async fn release(manager: &ManagerProxy<'_>, ports: &[u16]) {
    for p in ports {
        let _ = manager.release_udp_port(*p).await;
    }
}

/// Unwires `ports` (Disconnect: a cable's other end goes with it), all of them tried; the
/// first failure is the error.
pub(super) async fn unwire(conn: &zbus::Connection, vms: &Snapshot, ports: &[Port]) -> Result<()> {
    let manager = super::manager(conn).await?;
    let mut paths = Vec::new();
    for p in ports {
        paths.push((p, &vms.vm(&p.vm)?.path));
    }
    let results = futures_util::future::join_all(paths.into_iter().map(|(p, path)| {
        let manager = &manager;
        async move {
            manager
                .disconnect(path, p.adapter)
                .await
                .map_err(Error::call(format!("unlink {p}")))
        }
    }))
    .await;
    results.into_iter().collect()
}
