//! The process a request is about, held by the pidfd the caller sent, and checked to be the
//! caller's own.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use super::error::{Error, Result};

pub struct Target {
    pub pid: u32,
    pidfd: OwnedFd,
}

impl Target {
    /// Takes the process `pidfd` holds, if it is `pid` and its real uid is `caller`.
    pub fn check(pidfd: OwnedFd, pid: u32, caller: u32) -> Result<Target> {
        let fdinfo = PathBuf::from(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()));
        let info = std::fs::read_to_string(&fdinfo).map_err(|source| Error::Read {
            path: fdinfo,
            source,
        })?;
        // A pidfd's fdinfo has a "Pid:" line (-1 once the process is reaped); other
        // descriptors have none.
        match field(&info, "Pid:").map(str::parse::<i64>) {
            Some(Ok(p)) if p == i64::from(pid) => {}
            Some(Ok(-1)) => return Err(Error::Gone { pid }),
            Some(Ok(other)) => {
                return Err(Error::NotItsPidfd {
                    pid,
                    why: format!("it holds process {other}"),
                })
            }
            _ => {
                return Err(Error::NotItsPidfd {
                    pid,
                    why: "it is no pidfd".into(),
                })
            }
        }
        let owner = real_uid(pid)?;
        let target = Target { pid, pidfd };
        // If the process still lives, /proc/<pid> was read from it and not from a process
        // that got its pid since.
        if !target.alive() {
            return Err(Error::Gone { pid });
        }
        if owner != caller {
            return Err(Error::NotYours { pid, owner, caller });
        }
        Ok(target)
    }

    pub fn alive(&self) -> bool {
        crate::pidfd::send_signal(self.pidfd.as_fd(), 0).is_ok()
    }
}

/// The real uid of `pid`: the first number of the "Uid:" line of its status.
pub fn real_uid(pid: u32) -> Result<u32> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let status = std::fs::read_to_string(&path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => Error::Gone { pid },
        _ => Error::Read {
            path: path.clone(),
            source,
        },
    })?;
    field(&status, "Uid:")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Read {
            path,
            source: io::Error::new(io::ErrorKind::InvalidData, "no Uid line"),
        })
}

/// The first word after `key` on the line that starts with it.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pidfd::open as pidfd_open;

    #[test]
    fn a_pidfd_of_ones_own_process_passes_and_others_do_not() {
        let me = std::process::id();
        let uid = nix::unistd::getuid().as_raw();
        let t = Target::check(pidfd_open(me).unwrap(), me, uid).unwrap();
        assert!(t.alive());
        assert!(matches!(
            Target::check(pidfd_open(me).unwrap(), me, uid + 1),
            Err(Error::NotYours { .. })
        ));
        assert!(matches!(
            Target::check(pidfd_open(me).unwrap(), me + 1, uid),
            Err(Error::NotItsPidfd { .. })
        ));
        let file = std::fs::File::open("/proc/self/status").unwrap();
        assert!(matches!(
            Target::check(file.into(), me, uid),
            Err(Error::NotItsPidfd { .. })
        ));
    }

    #[test]
    fn a_process_that_has_ended_is_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let fd = pidfd_open(pid).unwrap();
        child.wait().unwrap();
        let uid = nix::unistd::getuid().as_raw();
        assert!(matches!(
            Target::check(fd, pid, uid),
            Err(Error::Gone { .. })
        ));
    }
}
