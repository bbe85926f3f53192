//! RepairDisks: `qemu-img check -r all` of a stopped VM's own qcow2 files (`disk_care`).

use super::Actor;
use crate::vm::error::Result;
use crate::vm::state::Op;
use crate::vm::{disk_care, disks};

impl Actor {
    /// The files in which something was repaired; none if all were sound.
    pub(super) async fn repair_disks(&mut self) -> Result<Vec<String>> {
        if self.admit(Op::RepairDisks)?.is_none() {
            return Ok(Vec::new());
        }
        let s = &self.record.settings;
        let own = disk_care::own_files(&self.vm_dir(), s);
        if own.is_empty() {
            return Ok(Vec::new());
        }
        let repaired =
            disk_care::repair(&disks::qemu_img(&s.qemu_path)?, self.name(), &own).await?;
        tracing::info!(vm_id = %self.id(), vm_name = %self.name(), ?repaired, "disks repaired");
        Ok(repaired)
    }
}
