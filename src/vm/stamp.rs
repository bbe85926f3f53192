//! A file as far as a change to it shows: the same inode with the same size, mtime and
//! ctime. Whoever changes a file's content, or puts another file or symlink in its place,
//! changes one of those (ctime cannot be set back), so what was found of a file is kept
//! while its stamp stays.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// Of the file `name` leads to (symlinks followed), None if it cannot be read, or if it
    /// changed after `since`: a change while it was read, which the reading saw or not.
    pub fn of(name: impl AsRef<std::path::Path>, since: SystemTime) -> Option<Stamp> {
        let m = std::fs::metadata(name).ok()?;
        let ctime = SystemTime::UNIX_EPOCH
            + Duration::new(u64::try_from(m.ctime()).ok()?, m.ctime_nsec() as u32);
        // ctime has the granularity of the kernel's coarse clock (a few ms): a second's margin.
        (ctime + Duration::from_secs(1) < since).then_some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}
