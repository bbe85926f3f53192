//! `link set VM:ethN suspended|active`: a cable between two of the daemon's VMs is suspended
//! at both ends, so both VMs show it so (Links); nothing passes once either end is.

use super::link::endpoint;
use crate::cli::LinkState;
use crate::error::{Error, Result};
use crate::snapshot::Snapshot;

pub async fn set(conn: &zbus::Connection, end: &str, state: LinkState) -> Result<()> {
    let port = endpoint(end)?;
    let vms = Snapshot::read(conn).await?;
    vms.vm(&port.vm)?;
    let Some(link) = vms.link_on(&port) else {
        return Err(Error::Link(format!(
            "{port} has no link to suspend or make active: link it first with gns3-qemuctl link"
        )));
    };
    let suspended = state == LinkState::Suspended;
    for p in link.ports() {
        let vm = vms.proxy(conn, &p.vm).await?;
        vm.set_link_suspended(p.adapter, suspended)
            .await
            .map_err(Error::call(format!("link set {p}")))?;
    }
    Ok(())
}
