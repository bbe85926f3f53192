//! `delete`: refuses a VM that is not stopped unless `--force` (Delete stops it first), and
//! then deletes none of those named.

use futures_util::future::join_all;

use crate::cli::Vms;
use crate::error::{Error, Result};

pub async fn run(conn: &zbus::Connection, which: &Vms, force: bool) -> Result<()> {
    let vms = super::select(conn, which).await?;
    if !force {
        for (name, vm) in &vms {
            let state = vm
                .state()
                .await
                .map_err(Error::call(format!("read the state of {name}")))?;
            if state != "stopped" {
                return Err(Error::Running(name.clone(), state));
            }
        }
    }
    let results = join_all(vms.iter().map(|(_, vm)| vm.delete())).await;
    let failed = vms
        .iter()
        .map(|(name, _)| name)
        .zip(results)
        .filter_map(|(name, r)| r.err().map(Error::call(format!("delete {name}"))))
        .collect();
    super::lifecycle::report(failed)
}
