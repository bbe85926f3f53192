//! Changing a VM's settings: checked whole, the names and ports it takes claimed, the limits
//! put on a running QEMU, then written; any failure on the way undoes the rest.

use super::Actor;
use crate::model::{Setting, Settings};
use crate::privilege::Privilege;
use crate::vm::claims::Claims;
use crate::vm::error::{Error, Result};
use crate::vm::qemu::Qemu;
use crate::vm::runtime::LiveChange;
use crate::vm::state::{verdict, Op, Verdict};
use crate::vm::tunnel::Backend;
use crate::vm::{base_uses, bases, disks, drives, lock, saved, settings, Pool};

impl Actor {
    pub(super) async fn configure(&mut self, changes: Vec<Setting>) -> Result<()> {
        let old = self.record.settings.clone();
        let new = settings::apply(&old, &changes, &self.ctx.limits)?;
        if new == old {
            return Ok(());
        }
        if let Some(key) = settings::needs_stopped_vm(&old, &new) {
            if verdict(self.state, Op::ConfigureStopped) == Verdict::Holds {
                return Err(Error::InvalidState(format!(
                    "cannot change {key} of VM '{}' while it is {}: QEMU holds it; stop the VM first",
                    self.name(),
                    self.state
                )));
            }
        }
        if new.cpus < old.cpus && self.qemu.is_some() {
            return Err(Error::InvalidState(format!(
                "cannot lower Cpus of VM '{}' from {} to {} while it is {}: a running guest keeps its CPUs; stop the VM first",
                self.name(),
                old.cpus,
                new.cpus,
                self.state
            )));
        }
        if let Some(t) = self
            .record
            .tunnels
            .iter()
            .find(|t| t.adapter >= new.adapters)
        {
            return Err(Error::InvalidArgument(format!(
                "adapter {} of VM '{}' has a UDP tunnel: remove it (RemoveUdpTunnel) before lowering Adapters to {}",
                t.adapter,
                self.name(),
                new.adapters
            )));
        }
        if new.adapter_type != old.adapter_type
            || new.custom_adapters != old.custom_adapters
            || new.qemu_path != old.qemu_path
        {
            self.ctx.binaries.check_nic_models(&new).await?;
        }
        let machine_changes = new.machine_type != old.machine_type
            || new.cpu_model != old.cpu_model
            || new.qemu_path != old.qemu_path;
        if machine_changes {
            self.ctx.binaries.check_machine(&new).await?;
        }
        if drives_differ(&old, &new) || new.qemu_path != old.qemu_path {
            let caps = self.ctx.binaries.probe(&new.qemu_path).await?;
            drives::check_binary(&caps, &new.qemu_path, &new)?;
        }
        // Claimed first: a base another VM holds is refused as such, before it is read.
        let claims = self.claim(&old, &new)?;
        // A new base image is checked now (and its format kept), so a refusal comes with
        // the change that causes it rather than at the next Start.
        let known = &self.record.image_formats;
        let formats = bases::check(
            &new,
            Some(&old),
            known,
            &self.ctx.image_dirs,
            &self.ctx.vetted,
        )
        .await?;
        saved::check_drives(&new, &formats)?;
        // The tunnels it has would go on the socket netdev from then on.
        let netdev_changes =
            new.legacy_networking != old.legacy_networking || new.qemu_path != old.qemu_path;
        if netdev_changes && !self.record.tunnels.is_empty() {
            let caps = self.ctx.binaries.probe(&new.qemu_path).await?;
            let allow = self.ctx.allow_unsafe_tunnels;
            Backend::allowed(&new.name, new.legacy_networking, &caps, allow)?;
        }
        let name = new.name.clone();
        let media = new.cdrom_image != old.cdrom_image;
        let limits = limits_differ(&old, &new);
        let _mark = self.mark_live(LiveChange::Limits, limits)?;
        let _media_mark = self.mark_live(LiveChange::Media, media)?;
        if let Some(qemu) = self.qemu.as_mut() {
            if limits {
                qemu.limit(&self.ctx.privilege, &name, Some(&old), &new)
                    .await?;
            }
            if media {
                if let Err(e) = qemu.set_media(&new.cdrom_image).await {
                    if limits {
                        undo_limits(qemu, &self.ctx.privilege, &name, &new, &old).await;
                    }
                    return Err(e);
                }
            }
        }
        let plugs = new.cpus > old.cpus;
        let _cpus_mark = self.mark_live(LiveChange::Cpus, plugs)?;
        if let Some(qemu) = self.qemu.as_mut().filter(|_| plugs) {
            if let Err(e) = qemu.plug_cpus(&name, new.cpus).await {
                // As much of it undone as QEMU and the guest let.
                if let Err(e) = qemu.unplug_cpus(old.cpus).await {
                    tracing::error!(vm_id = %self.record.id, "cannot unplug the vCPUs just added: {e}");
                }
                let _ = qemu
                    .limit(&self.ctx.privilege, &name, Some(&new), &old)
                    .await;
                return Err(e);
            }
        }
        let mut record = self.record.clone();
        // Gone before the record says what it no longer fits: a daemon killed in between
        // must not find a state that the new settings would load.
        let discards = saved::change_that_discards(&old, &new).filter(|_| self.saved_state);
        if let Some(key) = discards {
            record.last_error = self.discard_for_change(key).await?;
        }
        record.settings = new.clone();
        record.image_formats = formats;
        if let Err(e) = self.save(record.clone()).await {
            if let Some(qemu) = self.qemu.as_mut() {
                if limits {
                    undo_limits(qemu, &self.ctx.privilege, &name, &new, &old).await;
                }
                if media {
                    if let Err(e) = qemu.set_media(&old.cdrom_image).await {
                        tracing::error!(vm_id = %self.record.id, "cannot put the previous CD-ROM media back: {e}");
                    }
                }
                if plugs {
                    if let Err(e) = qemu.unplug_cpus(old.cpus).await {
                        tracing::error!(vm_id = %self.record.id, "cannot unplug the vCPUs just added: {e}");
                    }
                }
            }
            return Err(e);
        }
        claims.commit();
        self.release_old(&old, &new);
        if let Err(e) = disks::forget(&self.vm_dir(), &old, &new) {
            tracing::warn!(vm_id = %self.id(), "could not remove an old disk overlay: {e}");
        }
        self.record = record;
        tracing::info!(vm_id = %self.id(), vm_name = %self.name(), changed = ?changes.iter().map(Setting::key).collect::<Vec<_>>(), "settings changed");
        self.publish();
        Ok(())
    }

    /// Takes the new name and the new ports before the change is written.
    fn claim(&self, old: &Settings, new: &Settings) -> Result<Claims> {
        let mut claims = Claims::new(&self.ctx);
        if new.name != old.name {
            claims.name(&new.name, self.id())?;
        }
        if bases_differ(old, new) {
            claims.bases(new, self.id())?;
        }
        let old_ports = old.tcp_ports().map(|(_, p)| p);
        for (_, port) in new.tcp_ports() {
            if port != 0 && !old_ports.contains(&port) {
                claims.reserve(Pool::Console, port, self.id())?;
            }
        }
        Ok(claims)
    }

    /// The change is written: gives back the name and ports only the old settings held.
    fn release_old(&self, old: &Settings, new: &Settings) {
        if new.name != old.name {
            lock(&self.ctx.names).remove(&old.name);
        }
        if bases_differ(old, new) {
            let kept: Vec<_> = base_uses::of(new)
                .unwrap_or_default()
                .into_iter()
                .map(|(_, key, _)| key)
                .collect();
            let mut uses = lock(&self.ctx.bases);
            for (_, key, _) in base_uses::of(old).unwrap_or_default() {
                if !kept.contains(&key) {
                    uses.unset(&key, self.id());
                }
            }
        }
        let kept = new.tcp_ports().map(|(_, p)| p);
        let mut ports = self.ctx.ports(Pool::Console);
        for (_, p) in old.tcp_ports() {
            if p != 0 && !kept.contains(&p) {
                ports.release(p);
            }
        }
    }
}

/// Whether the disks or their interfaces differ, which the binary must then have.
fn drives_differ(old: &Settings, new: &Settings) -> bool {
    drives::DISKS
        .iter()
        .any(|d| d.image(old) != d.image(new) || d.interface(old) != d.interface(new))
}

/// Whether the base images, or how they are used, differ: what the VM holds of them.
fn bases_differ(old: &Settings, new: &Settings) -> bool {
    old.linked_clone != new.linked_clone
        || drives::DISKS.iter().any(|d| d.image(old) != d.image(new))
}

fn limits_differ(old: &Settings, new: &Settings) -> bool {
    old.cpu_throttling != new.cpu_throttling || old.process_priority != new.process_priority
}

async fn undo_limits(
    qemu: &mut Qemu,
    privilege: &Privilege,
    name: &str,
    new: &Settings,
    old: &Settings,
) {
    if let Err(e) = qemu.limit(privilege, name, Some(new), old).await {
        tracing::error!(vm_name = %name, "cannot put the previous priority and CPU limit back: {e}");
    }
}
