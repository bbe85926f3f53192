//! The wall-clock time of QEMU's virtual clock, for the capture records QEMU stamps with it.
//!
//! Without icount, QEMU's virtual clock is CLOCK_MONOTONIC since the first `cont`, stopped
//! while the guest is paused. QEMU sends RESUME right before it starts that clock and STOP
//! right after it stops it, each event stamped with the wall clock: so each run of the guest
//! is a segment (virtual time at its start, wall time at its start), and a virtual time maps
//! to the wall time of the last segment that began before it, plus the time since.
//!
//! The timeline is kept where QMP's events are first read (`qmp.rs`), before the actor gets
//! to them, so that a live stream never maps a fresh frame with a stale segment; and in the
//! VM's runtime dir, so that a daemon started again has it. A pause or resume made while no
//! daemon ran is not in it: the segments after such a gap are off by the pause's length.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Mutex;

use crate::lock::lock;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// (virtual µs, wall µs since the epoch) at each RESUME, in order.
    segments: Vec<(i64, i64)>,
    /// The virtual µs the last STOP froze the clock at, while the guest is paused.
    paused_at: Option<i64>,
}

impl Timeline {
    /// The guest's CPUs run again (RESUME at wall time `wall`, µs).
    pub fn resumed(&mut self, wall: i64) {
        let virt = match (self.segments.last(), self.paused_at.take()) {
            (None, _) => 0,
            (Some(_), Some(v)) => v,
            // Running already: a RESUME without a STOP before it changes nothing.
            (Some(_), None) => return,
        };
        self.segments.push((virt, wall));
    }

    /// The guest's CPUs stopped (STOP at wall time `wall`, µs).
    pub fn stopped(&mut self, wall: i64) {
        if self.paused_at.is_some() {
            return;
        }
        if let Some(&(virt, since)) = self.segments.last() {
            self.paused_at = Some(virt + (wall - since).max(0));
        }
    }

    /// Whether the last event seen stopped the guest.
    pub fn is_paused(&self) -> bool {
        self.paused_at.is_some()
    }

    /// The wall time (µs since the epoch) of virtual time `virt` (µs), if the guest ran
    /// by then as far as is known.
    pub fn wall(&self, virt: i64) -> Option<i64> {
        let &(at, since) = self.segments.iter().rev().find(|(at, _)| *at <= virt)?;
        Some(since + (virt - at))
    }
}

/// A VM's timeline, shared by the QMP reader that writes it and the captures that read it.
#[derive(Debug)]
pub struct Clock {
    timeline: Mutex<Timeline>,
    file: PathBuf,
}

impl Clock {
    /// The clock of a QEMU about to start: no segment yet.
    pub fn fresh(file: PathBuf) -> Clock {
        let _ = std::fs::remove_file(&file);
        Clock {
            timeline: Mutex::default(),
            file,
        }
    }

    /// The clock a previous daemon kept in `file`, or an empty one.
    pub fn load(file: PathBuf) -> Clock {
        let timeline = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Clock {
            timeline: Mutex::new(timeline),
            file,
        }
    }

    pub fn timeline(&self) -> Timeline {
        lock(&self.timeline).clone()
    }

    /// Follows QMP event `name` stamped `wall` (µs); true if it moved the timeline.
    pub fn event(&self, name: &str, wall: i64) -> bool {
        let mut t = lock(&self.timeline);
        let before = t.clone();
        match name {
            "RESUME" => t.resumed(wall),
            "STOP" => t.stopped(wall),
            _ => return false,
        }
        if *t == before {
            return false;
        }
        // The runtime dir is a tmpfs that lives as long as QEMU: written whole (renamed
        // over), without fsync.
        let tmp = self.file.with_extension("tmp");
        let written = serde_json::to_vec(&*t)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &self.file));
        if let Err(e) = written {
            tracing::warn!(file = %self.file.display(), "cannot keep the VM's clock: {e}");
        }
        true
    }
}

/// Whether QMP event `name` starts or stops the virtual clock.
pub fn moves(name: &str) -> bool {
    matches!(name, "RESUME" | "STOP")
}

/// The wall-clock stamp of a QMP event line (`"timestamp": {"seconds", "microseconds"}`),
/// in µs since the epoch.
pub fn event_time(line: &[u8]) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    let ts = v.get("timestamp")?;
    let seconds = ts.get("seconds")?.as_i64()?;
    let micros = ts.get("microseconds")?.as_i64()?;
    Some(seconds * 1_000_000 + micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paused_time_is_accounted_for() {
        let mut t = Timeline::default();
        assert_eq!(t.wall(0), None, "nothing known before the first RESUME");
        // Runs 4 s from wall 1000 s, paused 2 s, runs again.
        t.resumed(1_000_000_000);
        assert_eq!(t.wall(1_500_000), Some(1_001_500_000));
        t.stopped(1_004_000_000);
        t.stopped(1_004_500_000);
        t.resumed(1_006_000_000);
        t.resumed(1_007_000_000);
        assert_eq!(t.wall(3_999_999), Some(1_003_999_999));
        assert_eq!(t.wall(4_000_000), Some(1_006_000_000));
        assert_eq!(t.wall(5_000_000), Some(1_007_000_000));
    }

    #[test]
    fn the_clock_is_kept_and_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clock");
        let clock = Clock::fresh(file.clone());
        assert!(clock.event("RESUME", 10_000_000));
        assert!(!clock.event("RESUME", 11_000_000));
        assert!(!clock.event("SHUTDOWN", 11_000_000));
        assert!(clock.event("STOP", 12_000_000));
        let again = Clock::load(file.clone());
        assert_eq!(again.timeline(), clock.timeline());
        assert_eq!(Clock::fresh(file).timeline(), Timeline::default());
    }

    #[test]
    fn reads_the_stamp_of_an_event() {
        let line =
            br#"{"timestamp": {"seconds": 1700000000, "microseconds": 42}, "event": "STOP"}"#;
        assert_eq!(event_time(line), Some(1_700_000_000_000_042));
        assert_eq!(event_time(br#"{"event": "STOP"}"#), None);
    }
}
