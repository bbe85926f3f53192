//! ResetDisks and ResizeDisk: what the VM's own disks hold, reset or grown.

use super::Actor;
use crate::vm::drives::Disk;
use crate::vm::error::{Error, Result};
use crate::vm::state::Op;
use crate::vm::{disks, reset, resize};

impl Actor {
    /// Back to the initial state (the VM is stopped); settings, ports and tunnels stay.
    pub(super) async fn reset_disks(&mut self) -> Result<()> {
        // The state goes with the disks it was saved beside (and off the bases in place).
        let had = self.saved_state;
        self.discard_saved().await?;
        if had {
            tracing::warn!(vm_id = %self.id(), vm_name = %self.name(), "the saved state was discarded: ResetDisks");
        }
        let (vm_dir, s) = (self.vm_dir(), self.record.settings.clone());
        tokio::task::spawn_blocking(move || reset::remove_own(&vm_dir, &s))
            .await
            .map_err(|e| Error::Internal(format!("the reset task failed: {e}")))??;
        tracing::info!(vm_id = %self.id(), vm_name = %self.name(), "disks, UEFI variables and TPM state reset");
        Ok(())
    }

    /// Grows disk `name` to `bytes`: in QEMU if it runs, else its file.
    pub(super) async fn resize_disk(&mut self, name: &str, bytes: u64) -> Result<()> {
        let disk = resize::disk_named(name)?;
        self.admit(Op::ResizeDisk)?;
        let vm = self.name().to_string();
        resize::check_request(&vm, &self.record.settings, disk, bytes)?;
        if let Some(qemu) = self.qemu.as_mut() {
            let current = qemu.disk_size(disk).await?;
            resize::check_growth(&vm, disk, current, bytes)?;
            qemu.grow(disk, bytes).await?;
        } else {
            // Loading the state would take the disk back to the size it was saved at.
            if self.saved_state {
                let said = self
                    .discard_for_change(&format!("the size of {name}"))
                    .await?;
                self.note(said).await;
            }
            self.grow_offline(disk, bytes).await?;
        }
        tracing::info!(vm_id = %self.id(), vm_name = %vm, disk = name, bytes, "disk grown");
        Ok(())
    }

    /// Grows the file of a stopped VM's disk: its overlay, or its base used in place (in
    /// the format pinned for it, checked first as Start checks it). A VM that never started
    /// has no overlay yet: it is made now, as Start would make it (its base checked first),
    /// then grown, so that a disk can be given its size before the guest's first boot.
    async fn grow_offline(&mut self, disk: Disk, bytes: u64) -> Result<()> {
        let (vm, vm_dir) = (self.name().to_string(), self.vm_dir());
        let s = self.record.settings.clone();
        let img = disks::qemu_img(&s.qemu_path)?;
        if disk.in_place(&s).is_some() {
            let formats = self.checked_bases().await?;
            let (file, format) = disk.file(&vm_dir, &s, &formats)?;
            let current = resize::file_size(&img, &file, &format).await?;
            resize::check_growth(&vm, disk, current, bytes)?;
            return resize::grow_file(&img, &file, &format, bytes).await;
        }
        let file = disk.overlay(&vm_dir, &s);
        if std::fs::metadata(&file).is_ok_and(|m| m.len() > 0) {
            let current = resize::file_size(&img, &file, "qcow2").await?;
            resize::check_growth(&vm, disk, current, bytes)?;
            return resize::grow_file(&img, &file, "qcow2", bytes).await;
        }
        let formats = self.checked_bases().await?;
        let current = match disks::with_format(&formats, disk.image(&s))? {
            Some((base, format)) => resize::file_size(&img, base.as_ref(), format).await?,
            None => disks::FLASH_SIZE,
        };
        resize::check_growth(&vm, disk, current, bytes)?;
        disks::prepare_one(&vm_dir, &s, &formats, disk).await?;
        let grown = resize::grow_file(&img, &file, "qcow2", bytes).await;
        if grown.is_err() {
            // Start makes it again; a refusal leaves nothing it made.
            let _ = std::fs::remove_file(&file);
        }
        grown
    }
}
