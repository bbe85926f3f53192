//! Packet captures of a running VM's adapters (StartCapture, StopCapture, OpenCapture):
//! the filter in QEMU, the state file in the runtime dir, the finished file when it ends
//! (asked, at capture_max_mib, or with QEMU), and what a daemon started again finds of them.

use serde_json::json;
use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

use super::Actor;
use crate::vm::capture::clock::{Clock, Timeline};
use crate::vm::capture::{self, stream, Asked, Live, Options};
use crate::vm::error::{Error, Result};
use crate::vm::qemu::{Qemu, QMP_TIMEOUT};
use crate::vm::qmp;
use crate::vm::state::Op;
use crate::vm::tunnel;
use crate::vm::{Command, State};

/// How often a capture's size is looked at against capture_max_mib.
const SIZE_POLL: Duration = Duration::from_millis(200);

/// A capture the actor runs.
pub(super) struct Running {
    live: Live,
    /// True once it has ended, for its streams.
    ended: watch::Sender<bool>,
}

impl Running {
    pub(super) fn entry(&self) -> (u32, String) {
        (
            self.live.adapter,
            self.live.path.to_string_lossy().into_owned(),
        )
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Removes filter `id` from QEMU; one already gone is no error.
async fn object_del(qemu: &mut Qemu, id: &str) -> Result<()> {
    match qemu
        .qmp
        .execute("object-del", Some(json!({ "id": id })), QMP_TIMEOUT)
        .await
    {
        Err(qmp::Error::Command { desc, .. }) if desc.contains("not found") => Ok(()),
        other => other.map(drop).map_err(Error::from),
    }
}

/// Writes the finished file of `live`, off the actor's thread.
async fn finish(live: Live, timeline: Timeline) -> Result<()> {
    let path = live.path.clone();
    tokio::task::spawn_blocking(move || capture::finish(&live, &timeline))
        .await
        .map_err(|e| Error::Internal(format!("the capture task failed: {e}")))?
        .map_err(|e| Error::Internal(format!("cannot write the capture {}: {e}", path.display())))
}

impl Actor {
    pub(super) async fn start_capture(&mut self, adapter: u32, asked: Asked) -> Result<String> {
        tunnel::check_adapter(self.name(), adapter, self.record.settings.adapters)?;
        let options = Options::check(&asked)?;
        if self.admit(Op::Capture)?.is_none() {
            return Err(Error::Internal("a capture is never done already".into()));
        }
        if let Some(c) = self.captures.get(&adapter) {
            return Err(Error::InvalidState(format!(
                "adapter {adapter} of VM '{}' is captured already, into {}; StopCapture first",
                self.name(),
                c.live.path.display()
            )));
        }
        let dir = capture::dir(&self.vm_dir());
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
        let mut live = Live {
            adapter,
            path: capture::new_path(&self.vm_dir(), adapter, SystemTime::now()),
            start_ts: 0,
            snap_length: options.snap_length,
            direction: options.direction,
        };
        let id = capture::object_id(adapter);
        let qemu = self.running()?;
        // QEMU stamps records from time(NULL) at object-add: read around it until both
        // reads agree, so the second is known exactly.
        for attempt in 1..=3 {
            let before = now_secs();
            qemu.qmp
                .execute("object-add", Some(live.object()), QMP_TIMEOUT)
                .await?;
            let after = now_secs();
            live.start_ts = before;
            if before == after || attempt == 3 {
                if before != after {
                    tracing::warn!(
                        adapter,
                        "the start second of a capture is known to 1 s only"
                    );
                }
                break;
            }
            object_del(qemu, &id).await?;
            let _ = std::fs::remove_file(live.part());
        }
        if let Err(e) = self.runtime.save_capture(&live) {
            let qemu = self.running()?;
            let _ = object_del(qemu, &id).await;
            let _ = std::fs::remove_file(live.part());
            return Err(Error::Internal(e));
        }
        let path = live.path.to_string_lossy().into_owned();
        tracing::info!(vm_id = %self.id(), vm_name = %self.name(), adapter, file = %path, snap_length = live.snap_length, direction = ?live.direction, "capture started");
        self.keep_capture(live);
        Ok(path)
    }

    /// Takes `live` as running: in the view, and watched against capture_max_mib.
    fn keep_capture(&mut self, live: Live) {
        let (ended, watched) = watch::channel(false);
        let (part, path, adapter) = (live.part(), live.path.clone(), live.adapter);
        let max = self.ctx.capture_max_bytes;
        let commands = self.commands.clone();
        tokio::spawn(async move {
            let mut watched = watched;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(SIZE_POLL) => {}
                    changed = watched.changed() => if changed.is_err() || *watched.borrow() {
                        return;
                    },
                }
                if std::fs::metadata(&part).is_ok_and(|m| m.len() >= max) {
                    if let Some(tx) = commands.upgrade() {
                        let _ = tx.send(Command::CaptureFull(adapter, path)).await;
                    }
                    return;
                }
            }
        });
        self.captures.insert(adapter, Running { live, ended });
        self.publish();
    }

    pub(super) async fn stop_capture(&mut self, adapter: u32) -> Result<()> {
        tunnel::check_adapter(self.name(), adapter, self.record.settings.adapters)?;
        if !self.captures.contains_key(&adapter) {
            return Ok(());
        }
        self.end_capture(adapter).await
    }

    /// The capture of `adapter` into `path` has reached capture_max_mib.
    pub(super) async fn capture_full(&mut self, adapter: u32, path: PathBuf) {
        if self
            .captures
            .get(&adapter)
            .is_none_or(|c| c.live.path != path)
        {
            return;
        }
        let mib = self.ctx.capture_max_bytes >> 20;
        tracing::warn!(vm_id = %self.id(), vm_name = %self.name(), adapter, file = %path.display(), capture_max_mib = mib, "capture stopped: its file reached capture_max_mib ({mib} MiB)");
        if let Err(e) = self.end_capture(adapter).await {
            tracing::error!(vm_id = %self.id(), adapter, "cannot stop a full capture: {e}");
        }
    }

    /// Ends the running capture of `adapter`: the filter goes (QEMU closes the file), the
    /// finished file is written, the state file goes.
    async fn end_capture(&mut self, adapter: u32) -> Result<()> {
        let Some(qemu) = self.qemu.as_mut() else {
            return Err(Error::Internal("a capture without QEMU".into()));
        };
        object_del(qemu, &capture::object_id(adapter)).await?;
        let timeline = qemu.clock.timeline();
        let Some(c) = self.captures.remove(&adapter) else {
            return Ok(());
        };
        let _ = c.ended.send(true);
        let path = c.live.path.clone();
        let done = finish(c.live, timeline).await;
        self.runtime.remove_capture(adapter);
        self.publish();
        done?;
        tracing::info!(vm_id = %self.id(), vm_name = %self.name(), adapter, file = %path.display(), "capture stopped");
        Ok(())
    }

    /// QEMU is gone, and its files closed: every capture is finished.
    pub(super) async fn end_captures(&mut self, timeline: &Timeline) {
        for (adapter, c) in std::mem::take(&mut self.captures) {
            let _ = c.ended.send(true);
            let path = c.live.path.clone();
            if let Err(e) = finish(c.live, timeline.clone()).await {
                tracing::error!(vm_id = %self.id(), adapter, "{e}");
            }
            self.runtime.remove_capture(adapter);
            tracing::info!(vm_id = %self.id(), vm_name = %self.name(), adapter, file = %path.display(), "capture ended with the VM");
        }
        // Not published here: the caller turns the VM stopped next, and publishes the
        // captures' end with it, in one PropertiesChanged.
    }

    pub(super) fn open_capture(&mut self, adapter: u32) -> Result<OwnedFd> {
        tunnel::check_adapter(self.name(), adapter, self.record.settings.adapters)?;
        self.admit(Op::Capture)?;
        let clock = self.running()?.clock.clone();
        let Some(c) = self.captures.get(&adapter) else {
            return Err(Error::InvalidState(format!(
                "adapter {adapter} of VM '{}' has no capture; StartCapture first",
                self.name()
            )));
        };
        let feed = stream::Feed {
            start_ts: c.live.start_ts,
            clock,
            ended: c.ended.subscribe(),
        };
        stream::open(&c.live.part(), feed).map_err(|e| {
            Error::Internal(format!(
                "cannot open the capture {}: {e}",
                c.live.part().display()
            ))
        })
    }

    /// For an adopted QEMU: a capture with its state file and its filter goes on; one
    /// whose filter is gone is finished; a filter without a state file (the previous
    /// daemon died inside StartCapture) is removed with its file.
    pub(super) async fn readopt_captures(&mut self, qemu: &mut Qemu, state: State) {
        let objects = qemu
            .qmp
            .execute("qom-list", Some(json!({ "path": "/objects" })), QMP_TIMEOUT)
            .await;
        let filters: HashSet<String> = match &objects {
            Ok(list) => list
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o["name"].as_str())
                .filter(|n| n.starts_with(capture::OBJECT_PREFIX))
                .map(str::to_string)
                .collect(),
            Err(e) => {
                tracing::warn!(vm_id = %self.id(), "cannot list the objects of an adopted QEMU: {e}");
                HashSet::new()
            }
        };
        let timeline = qemu.clock.timeline();
        let left = self.runtime.captures();
        if !left.is_empty() && timeline.is_paused() == (state == State::Running) {
            // No event came to a daemon meanwhile: how long the guest was paused is unknown.
            tracing::warn!(vm_id = %self.id(), "the VM was paused or resumed while gns3-qemud was not running: its captures' times after that are off by the pause");
        }
        let mut kept = HashSet::new();
        for live in left {
            let id = capture::object_id(live.adapter);
            kept.insert(id.clone());
            if filters.contains(&id) {
                tracing::info!(vm_id = %self.id(), adapter = live.adapter, file = %live.path.display(), "capture goes on");
                self.keep_capture(live);
                continue;
            }
            let adapter = live.adapter;
            if let Err(e) = finish(live, timeline.clone()).await {
                tracing::error!(vm_id = %self.id(), adapter, "{e}");
            }
            self.runtime.remove_capture(adapter);
        }
        for id in filters.difference(&kept) {
            if let Err(e) = object_del(qemu, id).await {
                tracing::warn!(vm_id = %self.id(), filter = %id, "cannot remove a capture left half-started: {e}");
            }
        }
        self.remove_stray_parts();
    }

    /// For a VM whose QEMU is gone while no daemon ran: its captures are finished with
    /// the timeline kept, before the runtime dir goes.
    pub(super) async fn finish_left_captures(&mut self) {
        let timeline = Clock::load(self.runtime.clock()).timeline();
        for live in self.runtime.captures() {
            let adapter = live.adapter;
            if let Err(e) = finish(live, timeline.clone()).await {
                tracing::error!(vm_id = %self.id(), adapter, "{e}");
            }
            self.runtime.remove_capture(adapter);
        }
        self.remove_stray_parts();
    }

    /// `.part` files of no capture: started by a daemon that died before it kept their
    /// state, so their stamps cannot be put right.
    fn remove_stray_parts(&self) {
        let Ok(entries) = std::fs::read_dir(capture::dir(&self.vm_dir())) else {
            return;
        };
        let live: HashSet<PathBuf> = self.captures.values().map(|c| c.live.part()).collect();
        for e in entries.flatten() {
            let path = e.path();
            let part = path.extension().is_some_and(|x| x == "part");
            if part && !live.contains(&path) {
                tracing::info!(vm_id = %self.id(), file = %path.display(), "removing a capture left half-started");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}
