//! `delete`: refuses a VM that is not stopped unless `--force` (Delete stops it first), and
//! then deletes none of those named.

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
    super::lifecycle::all_at_once(vms.iter().map(|(name, vm)| async move {
        vm.delete()
            .await
            .map_err(Error::call(format!("delete {name}")))
    }))
    .await
}
