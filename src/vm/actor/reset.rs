//! ResetDisks and ResizeDisk: what the VM's own disks hold, reset or grown.

use super::Actor;
use crate::vm::error::Result;
use crate::vm::reset;

impl Actor {
    /// Back to the initial state (the VM is stopped); settings, ports and tunnels stay.
    pub(super) async fn reset_disks(&mut self) -> Result<()> {
        let (vm_dir, s) = (self.vm_dir(), self.record.settings.clone());
        tokio::task::spawn_blocking(move || reset::remove_own(&vm_dir, &s))
            .await
            .map_err(|e| crate::vm::Error::Internal(format!("the reset task failed: {e}")))??;
        tracing::info!(vm_id = %self.id(), vm_name = %self.name(), "disks, UEFI variables and TPM state reset");
        Ok(())
    }
}
