//! OnStop save-state: the guest's RAM and devices saved into the VM's qcow2 files, and the
//! next Start resuming from them. The state on disk is whole or absent after any end of a
//! save or a load (`saved.rs` says what whole is); SavedState follows it.

use nix::sys::signal::Signal;
use std::time::Duration;
use tokio::time::{timeout, timeout_at, Instant};

use super::shutdown::Ending;
use super::Actor;
use crate::model::OnStop;
use crate::vm::error::{Error, Result};
use crate::vm::qemu::{Qemu, QMP_TIMEOUT};
use crate::vm::runtime::Stopping;
use crate::vm::saved::{self, Status, NODE};
use crate::vm::snapshots::{self, DELETE_JOB, LOAD_JOB, SAVE_JOB};
use crate::vm::{disks, State};

/// The least a load of the saved state is given at Start (StopTimeout, if longer): it
/// reads as much as the save wrote.
const LOAD_TIME: Duration = Duration::from_secs(60);
/// How long a QEMU killed with SIGKILL takes to be gone.
const KILL_GRACE: Duration = Duration::from_secs(5);

impl Actor {
    /// Saves the running VM's state, then stops it; returns once it is stopped. A save
    /// that fails or passes StopTimeout stops the VM hard, leaves no state, and says why in
    /// LastError. Goes on with a save a previous daemon began (its job in QEMU, or its
    /// state on disk).
    pub(super) async fn save_and_stop(&mut self) -> Result<()> {
        self.set_state(State::Stopping);
        if self.qemu.is_none() {
            self.set_state(State::Stopped);
            return Ok(());
        }
        let secs = self.record.settings.stop_timeout;
        let under_way = self.runtime.stop_under_way();
        let going_on = under_way.is_some_and(|s| s.on_stop == OnStop::SaveState);
        let stopping = match under_way {
            Some(s) if going_on => s,
            _ => {
                let timeout = Duration::from_secs(secs.into());
                let stopping = Stopping::within(OnStop::SaveState, timeout);
                self.runtime
                    .begin_stop(&stopping)
                    .map_err(Error::Internal)?;
                stopping
            }
        };
        let deadline = Instant::now() + stopping.left();
        let saved = match timeout_at(deadline, self.save_state(going_on, deadline)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!(
                "the state of VM '{}' could not be saved: {e}",
                self.name()
            )),
            Err(_) => Err(format!(
                "the state of VM '{}' could not be saved within {secs} s (StopTimeout)",
                self.name()
            )),
        };
        match saved {
            Ok(()) => {
                self.saved_state = true;
                tracing::info!(vm_id = %self.id(), vm_name = %self.name(), "VM state saved");
                self.power_off().await
            }
            Err(why) => {
                self.stop_hard().await?;
                self.discard_left(&why).await;
                Ok(())
            }
        }
    }

    /// Everything of a save up to the VM state on disk, whole. `going_on`: with the save a
    /// previous daemon began (its marker is in the runtime dir), whose job or state is this
    /// one's; else whatever QEMU has of an earlier save is stale (the guest may have run
    /// since) and is saved over.
    async fn save_state(&mut self, going_on: bool, deadline: Instant) -> Result<()> {
        let vm_dir = self.vm_dir();
        let qemu = self.running()?;
        if snapshots::has_job(qemu, SAVE_JOB, deadline).await? {
            let finished = snapshots::finish(qemu, SAVE_JOB, deadline).await;
            if going_on {
                return finished;
            }
        }
        // Paused first: a save resumes the guest it found running.
        qemu.qmp.execute("stop", None, QMP_TIMEOUT).await?;
        let (drives, state) = snapshots::nodes(qemu, deadline).await?;
        if let Some(state) = &state {
            if going_on
                && state.tagged.is_some_and(|size| size > 0)
                && drives.iter().all(|d| d.tagged.is_some())
            {
                // Saved whole by a daemon that died before QEMU quit.
                return Ok(());
            }
        } else {
            let image = saved::file(&vm_dir);
            make_image(&self.record.settings.qemu_path, &image).await?;
            let qemu = self.running()?;
            snapshots::open_state(qemu, &image, deadline).await?;
        }
        let qemu = self.running()?;
        let (drives, state) = snapshots::nodes(qemu, deadline).await?;
        let devices = snapshots::devices(&drives, NODE);
        // Tags a save cut short left: QEMU refuses to save over them.
        if drives.iter().any(|d| d.tagged.is_some()) || state.is_some_and(|s| s.tagged.is_some()) {
            let args = serde_json::json!({ "devices": devices });
            snapshots::run(qemu, "snapshot-delete", DELETE_JOB, args, deadline).await?;
        }
        let args = serde_json::json!({ "vmstate": NODE, "devices": devices });
        snapshots::run(qemu, "snapshot-save", SAVE_JOB, args, deadline).await
    }

    /// A save that failed or took too long: QEMU killed at once (a QEMU inside a save
    /// answers nothing), as PowerOff would end it.
    async fn stop_hard(&mut self) -> Result<()> {
        let name = self.name().to_string();
        let Some(qemu) = self.qemu.as_mut() else {
            self.set_state(State::Stopped);
            return Ok(());
        };
        snapshots::abandon(qemu, SAVE_JOB).await;
        if let Err(e) = qemu.process.signal(Signal::SIGKILL) {
            tracing::warn!(vm_id = %self.record.id, "cannot send SIGKILL: {e}");
        }
        match timeout(KILL_GRACE, qemu.process.exited()).await {
            Ok(exit) => {
                self.exited(exit, Ending::Asked).await;
                Ok(())
            }
            Err(_) => Err(Error::Timeout(format!(
                "QEMU of VM '{name}' (pid {}) did not die even after SIGKILL",
                qemu.process.pid()
            ))),
        }
    }

    /// Removes what a failed save or load left, and says why in LastError.
    async fn discard_left(&mut self, why: &str) {
        let said = match self.discard_saved().await {
            Ok(()) => format!("{why}; nothing of it was kept"),
            Err(e) => format!("{why}; what it left could not be removed: {e}"),
        };
        tracing::warn!(vm_id = %self.id(), vm_name = %self.name(), "{said}");
        self.note(said).await;
    }

    /// Records `last_error` and publishes it.
    pub(super) async fn note(&mut self, last_error: String) {
        let mut record = self.record.clone();
        record.last_error = last_error;
        if let Err(e) = self.save(record.clone()).await {
            tracing::error!(vm_id = %self.id(), "cannot record the VM's last error: {e}");
        }
        self.record = record;
        self.publish();
    }

    /// The files of the saved state: its image and the VM's writable drives.
    fn saved_files(&self) -> (std::path::PathBuf, Vec<std::path::PathBuf>) {
        let vm_dir = self.vm_dir();
        let s = &self.record.settings;
        let drives = saved::drives(&vm_dir, s, &self.record.image_formats);
        (
            saved::file(&vm_dir),
            drives.into_iter().map(|d| d.file).collect(),
        )
    }

    /// Removes the saved state of the stopped VM, whole or partial; nothing if there is none.
    pub(super) async fn discard_saved(&mut self) -> Result<()> {
        let (state, drives) = self.saved_files();
        let tagged = match saved::status(&state, &drives) {
            Status::Absent => None,
            Status::Whole => Some(drives),
            Status::Partial(tagged) => Some(tagged),
        };
        if let Some(tagged) = tagged {
            let qemu_img = disks::qemu_img(&self.record.settings.qemu_path)?;
            saved::discard(&qemu_img, &state, &tagged).await?;
        }
        self.saved_state = false;
        self.publish();
        Ok(())
    }

    /// DiscardSavedState.
    pub(super) async fn discard_saved_state(&mut self) -> Result<()> {
        let had = self.saved_state;
        self.discard_saved().await?;
        if had {
            tracing::info!(vm_id = %self.id(), vm_name = %self.name(), "saved state discarded");
        }
        Ok(())
    }

    /// A change of `key` discards the saved state, saying so; the text for LastError.
    pub(super) async fn discard_for_change(&mut self, key: &str) -> Result<String> {
        self.discard_saved().await?;
        let said = format!("the saved state was discarded: {key} changed");
        tracing::warn!(vm_id = %self.id(), vm_name = %self.name(), "{said}");
        Ok(said)
    }

    /// At the daemon's start, for a VM whose QEMU is not running: SavedState from the disk,
    /// and what a save or a load cut short left removed.
    pub(super) async fn find_saved_state(&mut self) {
        let (state, drives) = self.saved_files();
        match saved::status(&state, &drives) {
            Status::Whole => self.saved_state = true,
            Status::Absent => {}
            Status::Partial(_) => {
                let why = "a save or load of the VM's state was cut short (gns3-qemud or QEMU \
                           was killed)";
                self.discard_left(why).await;
            }
        }
        self.publish();
    }

    /// At Start, while QEMU is still paused (-S): the saved state loaded, then removed
    /// from the disks before the guest runs, so that no later Start loads it again.
    pub(super) async fn resume_saved(&mut self, qemu: &mut Qemu) -> Result<()> {
        if !self.saved_state {
            return Ok(());
        }
        self.loading = true;
        let secs = Duration::from_secs(self.record.settings.stop_timeout.into());
        let deadline = Instant::now() + secs.max(LOAD_TIME);
        let image = saved::file(&self.vm_dir());
        let load = async {
            snapshots::open_state(qemu, &image, deadline).await?;
            let (drives, _) = snapshots::nodes(qemu, deadline).await?;
            let devices = snapshots::devices(&drives, NODE);
            let args = serde_json::json!({ "vmstate": NODE, "devices": devices });
            snapshots::run(qemu, "snapshot-load", LOAD_JOB, args, deadline).await?;
            let args = serde_json::json!({ "devices": devices });
            snapshots::run(qemu, "snapshot-delete", DELETE_JOB, args, deadline).await?;
            snapshots::close_state(qemu, deadline).await
        };
        match timeout_at(deadline, load).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.not_resumed(&e.to_string())),
            Err(_) => return Err(self.not_resumed("it took too long")),
        }
        if let Err(e) = std::fs::remove_file(&image) {
            tracing::warn!(vm_id = %self.id(), "cannot remove the loaded state {}: {e}", image.display());
        }
        self.saved_state = false;
        self.loading = false;
        tracing::info!(vm_id = %self.id(), vm_name = %self.name(), "VM resumed from its saved state");
        Ok(())
    }

    fn not_resumed(&self, why: &str) -> Error {
        Error::StartFailed(format!(
            "VM '{}' could not be resumed from its saved state ({why}); the saved state is \
             discarded: start the VM again to boot it afresh",
            self.name()
        ))
    }

    /// A Start that failed after it began to load the saved state (QEMU is gone): the
    /// state goes.
    pub(super) async fn after_failed_load(&mut self, e: &Error) {
        if std::mem::take(&mut self.loading) {
            self.discard_left(&e.to_string()).await;
        }
    }
}

/// A new image for the VM state in place of any left.
async fn make_image(qemu_path: &str, image: &std::path::Path) -> Result<()> {
    let qemu_img = disks::qemu_img(qemu_path)?;
    let _ = std::fs::remove_file(image);
    let args = [
        "create",
        "-q",
        "-f",
        "qcow2",
        &image.to_string_lossy(),
        saved::FILE_SIZE,
    ];
    disks::run(&qemu_img, &args).await.map(drop)
}
