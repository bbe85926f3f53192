//! The VMs across the host's boots and shutdowns: at the daemon's first start after a boot
//! (the kernel's boot id differs from the one kept, `boot.rs`), the VMs with Autostart, then
//! with `restore_on_boot` those that ran at the last StopAll, are started; StopAll, which
//! the host's shutdown calls (gns3-qemud-guests.service), stops every VM as its OnStop says.

use futures_util::future::join_all;

use super::Manager;
use crate::vm::{Error, Handle, Result, State};

impl Manager {
    /// Starts what a boot of the host brings back, if this start of the daemon is the first
    /// since the boot `boot_id`; after a mere restart of the daemon nothing is started (its
    /// running VMs were adopted by `load`). A VM that does not start is logged, with its
    /// LastError, and the others go on.
    pub async fn after_boot(&self, boot_id: &str) {
        if !self.boots.is_new(boot_id) {
            tracing::debug!("the daemon restarted within the same boot: no VM is started");
            return;
        }
        let autostart: Vec<Handle> = self
            .list()
            .into_iter()
            .filter(|h| h.view().settings.autostart)
            .collect();
        tracing::info!(
            vms = autostart.len(),
            "first start since the host booted: starting the VMs with Autostart"
        );
        start_all(&autostart, "Autostart").await;
        if self.restore_on_boot {
            let ids = self.boots.running_at_shutdown();
            let restored: Vec<Handle> = ids
                .iter()
                .filter_map(|id| {
                    let found = self.vms_by_id(id);
                    if found.is_none() {
                        tracing::info!(vm_id = %id, "a VM that ran at the last shutdown is gone; not restored");
                    }
                    found
                })
                .filter(|h| !h.view().settings.autostart)
                .collect();
            tracing::info!(
                vms = restored.len(),
                "restore_on_boot: starting the VMs that ran at the last shutdown"
            );
            start_all(&restored, "restore_on_boot").await;
        }
        // The boot is marked done only after every start has been tried, and the VMs to
        // restore forgotten just before: a daemon killed before then takes its next start
        // for the first after this boot and starts them all again, which is safe (a Start
        // of a running VM does nothing), where marking it first would leave the VMs not yet
        // started stopped for good. Forgetting before the mark keeps a list that was used
        // from being used again at the next boot.
        if let Err(e) = self.boots.forget_running() {
            tracing::error!(
                "cannot forget the VMs restored; they will be started again at the next boot: {e}"
            );
        }
        match self.boots.store(boot_id) {
            Ok(()) => tracing::info!("every start of this boot has been tried; its id is kept"),
            Err(e) => tracing::error!(
                "cannot keep the boot id: the next start of the daemon will start the Autostart VMs again: {e}"
            ),
        }
    }

    /// Stops every VM whose QEMU runs (paused ones too) as its OnStop says, all at once,
    /// returning once each has stopped (each bounded by its StopTimeout). With
    /// restore_on_boot, which VMs those were is kept first, for the next boot; without it,
    /// what an earlier call kept is forgotten.
    pub async fn stop_all(&self) -> Result<()> {
        let active: Vec<Handle> = self
            .list()
            .into_iter()
            .filter(|h| h.view().state.is_active())
            .collect();
        let kept = if self.restore_on_boot {
            let running: Vec<String> = active
                .iter()
                .filter(|h| h.view().state != State::Stopping)
                .map(|h| h.view().id.clone())
                .collect();
            self.boots.keep_running(&running)
        } else {
            self.boots.forget_running()
        };
        // The VMs are stopped all the same: at the host's shutdown a clean stop matters more
        // than coming back at the next boot.
        let kept = kept.map_err(|e| {
            let e = Error::Internal(format!(
                "cannot keep which VMs ran, for restore_on_boot (they are stopped all the same): {e}"
            ));
            tracing::error!("{e}");
            e
        });
        tracing::info!(vms = active.len(), "stopping every VM");
        let stops = active.iter().map(|h| async move { (h, h.stop().await) });
        let mut failed = Vec::new();
        for (h, result) in join_all(stops).await {
            if let Err(e) = result {
                let name = h.view().settings.name.clone();
                tracing::error!(vm_id = %h.view().id, vm_name = %name, "the VM did not stop: {e}");
                failed.push((name, e));
            }
        }
        let others = failed.len().saturating_sub(1);
        match failed.into_iter().next() {
            None => kept,
            Some((name, e)) => Err(about(&name, others, e)),
        }
    }

    fn vms_by_id(&self, id: &str) -> Option<Handle> {
        crate::vm::lock(&self.vms).get(id).cloned()
    }
}

async fn start_all(handles: &[Handle], why: &str) {
    let starts = handles.iter().map(|h| async move { (h, h.start().await) });
    for (h, result) in join_all(starts).await {
        let v = h.view();
        match result {
            Ok(()) => tracing::info!(vm_id = %v.id, vm_name = %v.settings.name, "started ({why})"),
            Err(e) => tracing::error!(
                vm_id = %v.id,
                vm_name = %v.settings.name,
                last_error = %v.last_error,
                "the VM did not start ({why}): {e}; LastError: {}",
                v.last_error
            ),
        }
    }
}

/// The first VM's failure, naming it and how many others failed, of the same kind.
fn about(name: &str, others: usize, e: Error) -> Error {
    let also = match others {
        0 => String::new(),
        1 => " (and 1 other VM did not stop: see the log)".into(),
        n => format!(" (and {n} other VMs did not stop: see the log)"),
    };
    let say = |m: String| format!("VM '{name}' did not stop: {m}{also}");
    match e {
        Error::InvalidArgument(m) => Error::InvalidArgument(say(m)),
        Error::NotFound(m) => Error::NotFound(say(m)),
        Error::AlreadyExists(m) => Error::AlreadyExists(say(m)),
        Error::InvalidState(m) => Error::InvalidState(say(m)),
        Error::QemuNotFound(m) => Error::QemuNotFound(say(m)),
        Error::ImageNotAccessible(m) => Error::ImageNotAccessible(say(m)),
        Error::DiskImageFailed(m) => Error::DiskImageFailed(say(m)),
        Error::StartFailed(m) => Error::StartFailed(say(m)),
        Error::PrivilegeFailed(m) => Error::PrivilegeFailed(say(m)),
        Error::Timeout(m) => Error::Timeout(say(m)),
        Error::Internal(m) => Error::Internal(say(m)),
        other @ (Error::Port(_) | Error::Store(_) | Error::Qmp(_)) => {
            Error::Internal(say(other.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_stop_names_the_vm_and_keeps_its_kind() {
        let e = about("r1", 0, Error::Timeout("QEMU did not answer".into()));
        assert!(matches!(&e, Error::Timeout(_)), "{e:?}");
        assert_eq!(e.to_string(), "VM 'r1' did not stop: QEMU did not answer");
        let e = about("r2", 2, Error::InvalidState("busy".into()));
        assert!(matches!(&e, Error::InvalidState(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "VM 'r2' did not stop: busy (and 2 other VMs did not stop: see the log)"
        );
    }
}
