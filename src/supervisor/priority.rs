//! Nice values, thread by thread. Linux keeps a nice value per thread, so `renice -p` on a
//! QEMU (what the seed did) leaves the vCPU threads where they were. QEMU creates its vCPU
//! threads before it runs the guest, and later threads inherit their creator's value, so
//! setting every thread in `/proc/<pid>/task` while QEMU waits in `-S` covers them all.

use std::io;
use std::path::PathBuf;

use super::error::{Error, Result};

/// The threads of `pid`, main thread first.
pub fn threads(pid: u32) -> Result<Vec<u32>> {
    let dir = PathBuf::from(format!("/proc/{pid}/task"));
    let entries = std::fs::read_dir(&dir).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => Error::Gone { pid },
        _ => Error::Read {
            path: dir.clone(),
            source,
        },
    })?;
    let mut tids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    Ok(tids)
}

/// Sets every thread of `pid` to `nice`; returns how many threads it set.
pub fn renice(pid: u32, nice: i32) -> Result<usize> {
    let mut set = 0;
    for tid in threads(pid)? {
        // SAFETY: setpriority takes plain integers; PRIO_PROCESS with a tid means that thread.
        let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
        if r == 0 {
            set += 1;
            continue;
        }
        let source = io::Error::last_os_error();
        // A thread that ended while we went through the list needs nothing.
        if source.raw_os_error() == Some(libc::ESRCH) {
            continue;
        }
        return Err(Error::Renice {
            pid,
            tid,
            nice,
            source,
        });
    }
    if set == 0 {
        return Err(Error::Gone { pid });
    }
    Ok(set)
}

/// Whether every thread of `pid` is at `nice` already (false if that cannot be read).
pub fn all_at(pid: u32, nice: i32) -> bool {
    threads(pid).is_ok_and(|tids| {
        tids.iter()
            .all(|&t| nice_of(pid, t).is_ok_and(|n| n == nice))
    })
}

/// The nice value of thread `tid` of `pid`, from `/proc/<pid>/task/<tid>/stat`.
pub fn nice_of(pid: u32, tid: u32) -> Result<i32> {
    let path = PathBuf::from(format!("/proc/{pid}/task/{tid}/stat"));
    let stat = std::fs::read_to_string(&path).map_err(|source| Error::Read {
        path: path.clone(),
        source,
    })?;
    crate::procfs::stat_field(&stat, 19)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Read {
            path,
            source: io::Error::new(io::ErrorKind::InvalidData, "no nice value in it"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_of_this_process_follows() {
        let pid = std::process::id();
        let helper =
            std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(300)));
        let before = nice_of(pid, pid).unwrap();
        // Lowering our own priority needs no privilege.
        let target = (before + 1).min(19);
        assert!(renice(pid, target).unwrap() >= 2);
        for tid in threads(pid).unwrap() {
            if let Ok(n) = nice_of(pid, tid) {
                assert_eq!(n, target, "thread {tid}");
            }
        }
        helper.join().unwrap();
        let _ = renice(pid, before);
        assert!(matches!(renice(u32::MAX / 2, 0), Err(Error::Gone { .. })));
    }
}
