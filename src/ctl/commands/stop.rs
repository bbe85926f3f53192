//! `stop [--timeout TIME]` and the stops of `down`: each VM's Stop, which does what its
//! OnStop says and returns once the VM is stopped. A shutdown may take the VM's StopTimeout
//! (up to an hour), so the call has no D-Bus timeout of its own. With a limit, a VM not
//! stopped by then is powered off (PowerOff ends a shutdown under way, and its Stop with it)
//! and that VM's stop counts as timed out (exit code 3). A save (save-state) is never cut
//! short: the daemon makes every call wait for it to end, so a PowerOff would only wait as
//! well, and then claim a power-off that did not happen.

use std::time::Duration;

use super::lifecycle::all_at_once;
use crate::cli::Vms;
use crate::duration;
use crate::error::{Error, Result};
use crate::proxies::VmProxy;

/// The OnStop whose Stop a PowerOff cannot cut short.
const SAVE_STATE: &str = "save-state";

/// Stops the VMs `which` names, in parallel; `timeout` as `--timeout` gives it (infinity:
/// none).
pub async fn run(conn: &zbus::Connection, which: &Vms, timeout: Option<Duration>) -> Result<()> {
    let vms = super::select(conn, which).await?;
    let limit = timeout.filter(|t| *t != Duration::MAX);
    all_at_once(vms.iter().map(|(name, vm)| stop(name, vm, limit))).await
}

/// Stops `vm` (named `name`), powering it off if it is not stopped within `limit`.
async fn stop(name: &str, vm: &VmProxy<'_>, limit: Option<Duration>) -> Result<()> {
    let failed = || Error::call(format!("stop {name}"));
    let Some(limit) = limit else {
        return vm.stop().await.map_err(failed());
    };
    let on_stop = vm
        .on_stop()
        .await
        .map_err(Error::call(format!("read the OnStop of {name}")))?;
    let mut stop = std::pin::pin!(vm.stop());
    if on_stop == SAVE_STATE {
        return stop.await.map_err(failed());
    }
    if let Ok(done) = tokio::time::timeout(limit, stop.as_mut()).await {
        return done.map_err(failed());
    }
    // A VM that stopped as its reply was on its way was not forced: its Stop ends at once.
    let state = vm
        .state()
        .await
        .map_err(Error::call(format!("read the state of {name}")))?;
    if state == "stopped" {
        return stop.await.map_err(failed());
    }
    vm.power_off()
        .await
        .map_err(Error::call(format!("power off {name}")))?;
    Err(Error::Forced {
        vm: name.to_string(),
        after: duration::format(limit),
    })
}
