//! Packet capture on a VM's adapters: QEMU's `filter-dump` on the NIC's side of the
//! adapter's hub (`gns3-N`), which sees both directions and outlives every rewire (a
//! `netdev_del` takes the filters of that netdev with it, so the tunnel's side would not).
//!
//! QEMU writes `<vm dir>/captures/ethN-<UTC time>.pcap.part` with its own stamps; when the
//! capture ends the daemon writes the `.pcap` beside it with wall-clock stamps (`pcap.rs`,
//! `clock.rs`), then removes the `.part`. The state of a live capture is a file in the VM's
//! runtime dir, so a daemon started again finds it (`actor/capture.rs`).

pub mod clock;
pub mod pcap;
pub mod stream;

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::{Error, Result};
use clock::Timeline;

/// SnapLength: QEMU's own default is 65536; 65535 is what tcpdump writes.
pub const SNAP_DEFAULT: u32 = 65535;
pub const SNAP_RANGE: std::ops::RangeInclusive<u32> = 64..=262_144;

/// Which frames of an adapter a capture records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Both,
    /// The frames the guest receives.
    In,
    /// The frames the guest sends.
    Out,
}

impl Direction {
    pub const NAMES: [&'static str; 3] = ["both", "in", "out"];

    /// filter-dump's `queue` on the NIC's peer, `gns3-N`: QEMU runs a sender's filters as
    /// "tx" and its receiver's as "rx", and gns3-N receives what the guest sends.
    fn queue(self) -> &'static str {
        match self {
            Direction::Both => "all",
            Direction::In => "tx",
            Direction::Out => "rx",
        }
    }
}

/// A capture's options as a client gave them, each possibly absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Asked {
    pub snap_length: Option<u32>,
    pub direction: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    pub snap_length: u32,
    pub direction: Direction,
}

impl Options {
    pub fn check(asked: &Asked) -> Result<Options> {
        let snap_length = asked.snap_length.unwrap_or(SNAP_DEFAULT);
        if !SNAP_RANGE.contains(&snap_length) {
            return Err(Error::InvalidArgument(format!(
                "SnapLength {snap_length} is out of range: give {} to {} bytes (default {SNAP_DEFAULT})",
                SNAP_RANGE.start(),
                SNAP_RANGE.end()
            )));
        }
        let direction = match asked.direction.as_deref() {
            None | Some("both") => Direction::Both,
            Some("in") => Direction::In,
            Some("out") => Direction::Out,
            Some(other) => {
                return Err(Error::InvalidArgument(format!(
                "Direction '{}' is not one of {}: in is what the guest receives, out what it sends",
                super::error::shown(other),
                Direction::NAMES.join(", ")
            )))
            }
        };
        Ok(Options {
            snap_length,
            direction,
        })
    }
}

/// A live capture, as its state file in the runtime dir has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Live {
    pub adapter: u32,
    /// The finished file; QEMU writes [`Live::part`].
    pub path: PathBuf,
    /// The wall-clock second QEMU added to its virtual clock in every stamp.
    pub start_ts: i64,
    pub snap_length: u32,
    pub direction: Direction,
}

impl Live {
    pub fn part(&self) -> PathBuf {
        part_of(&self.path)
    }

    /// The `object-add` arguments of this capture.
    pub fn object(&self) -> serde_json::Value {
        serde_json::json!({
            "qom-type": "filter-dump",
            "id": object_id(self.adapter),
            "netdev": super::network::adapter_netdev(self.adapter),
            "file": self.part(),
            "maxlen": self.snap_length,
            "queue": self.direction.queue(),
        })
    }
}

pub fn part_of(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".part");
    PathBuf::from(p)
}

/// The QOM id of adapter `adapter`'s capture filter.
pub fn object_id(adapter: u32) -> String {
    format!("{OBJECT_PREFIX}{adapter}")
}

pub const OBJECT_PREFIX: &str = "gns3-capture-";

pub fn dir(vm_dir: &Path) -> PathBuf {
    vm_dir.join("captures")
}

/// A new capture file's path for `adapter` started at `now`: `ethN-<yyyymmddThhmmssZ>.pcap`,
/// with `-2`, `-3`… if a capture of that second exists.
pub fn new_path(vm_dir: &Path, adapter: u32, now: SystemTime) -> PathBuf {
    let base = format!("eth{adapter}-{}", utc_stamp(now));
    let dir = dir(vm_dir);
    let mut path = dir.join(format!("{base}.pcap"));
    let mut n = 2;
    while path.exists() || part_of(&path).exists() {
        path = dir.join(format!("{base}-{n}.pcap"));
        n += 1;
    }
    path
}

/// `yyyymmddThhmmssZ` of `t`.
fn utc_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Writes `live`'s finished file from its `.part` with `timeline`, then removes the
/// `.part`. Done again from the same `.part`, it gives the same file; with no `.part` left,
/// it was done already. Blocking: for `spawn_blocking`.
pub fn finish(live: &Live, timeline: &Timeline) -> std::io::Result<()> {
    let part = live.part();
    let bytes = match std::fs::read(&part) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    // A .part QEMU never wrote a header in (it died at once) gives an empty capture.
    let out = pcap::fixed(&bytes, live.start_ts, timeline).unwrap_or_default();
    let tmp = live.path.with_extension("pcap.tmp");
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &live.path)?;
        if let Some(dir) = live.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    std::fs::remove_file(&part)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn options_are_checked() {
        let ok = Options::check(&Asked::default()).unwrap();
        assert_eq!(
            ok,
            Options {
                snap_length: 65535,
                direction: Direction::Both
            }
        );
        let asked = Asked {
            snap_length: Some(64),
            direction: Some("out".into()),
        };
        assert_eq!(Options::check(&asked).unwrap().direction, Direction::Out);
        for (snap, dir) in [(Some(63), None), (Some(262_145), None), (None, Some("rx"))] {
            let asked = Asked {
                snap_length: snap,
                direction: dir.map(str::to_string),
            };
            let e = Options::check(&asked).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        }
    }

    #[test]
    fn names_say_the_adapter_and_the_utc_second() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_256_000 + 3_723);
        assert_eq!(utc_stamp(t), "20261203T010203Z");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(super::dir(dir.path())).unwrap();
        let first = new_path(dir.path(), 3, t);
        assert_eq!(first.file_name().unwrap(), "eth3-20261203T010203Z.pcap");
        std::fs::write(part_of(&first), b"").unwrap();
        let second = new_path(dir.path(), 3, t);
        assert_eq!(second.file_name().unwrap(), "eth3-20261203T010203Z-2.pcap");
    }

    #[test]
    fn finishing_twice_gives_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let live = Live {
            adapter: 0,
            path: dir.path().join("eth0.pcap"),
            start_ts: 1000,
            snap_length: 65535,
            direction: Direction::Both,
        };
        let mut t = Timeline::default();
        t.resumed(2_000_000_000);
        std::fs::write(live.part(), pcap::tests::file(&[(1001, 5, b"x")])).unwrap();
        finish(&live, &t).unwrap();
        assert!(!live.part().exists());
        let want = pcap::tests::file(&[(2001, 5, b"x")]);
        assert_eq!(std::fs::read(&live.path).unwrap(), want);
        finish(&live, &t).unwrap();
        assert_eq!(std::fs::read(&live.path).unwrap(), want);
    }
}
