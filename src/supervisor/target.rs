//! The process a request is about, held by the pidfd the caller sent, and checked to be a
//! QEMU of the caller's own.
//!
//! The pidfd pins the process, not its number: a pid (or a thread's id) is freed once the
//! process is reaped, and the kernel may give it to anyone. So nothing here acts on a number
//! while the process it named may have gone: [`Target::renice`] stops the process through
//! the pidfd, so that its threads can neither end nor start, renices them, and checks through
//! the pidfd that it still lives before it lets it go on; a cgroup move is made only for an
//! unreaped child of the caller (see `server.rs`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::error::{Error, Result};
use super::pidfd;
use super::priority::threads;
use super::procfs;

/// What a QEMU system emulator's command name starts with (`qemu-system-x86_64` is cut to
/// 15 bytes by the kernel: `qemu-system-x86`).
const QEMU_COMM: &str = "qemu-system-";

/// The kernel's flag (include/linux/sched.h) of an io_uring worker thread, in the flags
/// field of its stat line.
const PF_IO_WORKER: u32 = 0x10;

/// How long the threads of a stopped process may take to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Target {
    pub pid: u32,
    /// Its parent when checked: the caller, if it is the caller's child.
    pub parent: u32,
    /// Its command name when checked.
    comm: String,
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
        let Stat { comm, parent } = stat(pid)?;
        let target = Target {
            pid,
            parent,
            comm,
            pidfd,
        };
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

    /// Refuses a process that is not a QEMU system emulator. Its command name is what the
    /// process was exec'd as; a process of the caller's uid could name itself so, but the
    /// caller's uid is the daemon's, which may do as much to its own processes anyway: the
    /// check keeps root from lending a nice value to anything else by mistake.
    /// The name was read in [`Target::check`], before the pidfd said the process lived.
    pub fn require_qemu(&self) -> Result<()> {
        if !self.comm.starts_with(QEMU_COMM) {
            return Err(Error::NotQemu {
                pid: self.pid,
                comm: self.comm.clone(),
            });
        }
        Ok(())
    }

    /// Whether the process has not exited: its pidfd is not readable yet (a zombie has
    /// exited, though its pid is still taken).
    pub fn alive(&self) -> bool {
        let mut fds = [libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one pollfd on a descriptor we own, no wait.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
        n == 0
    }

    fn signal(&self, signal: i32) -> Result<()> {
        pidfd::send_signal(self.pidfd.as_fd(), signal).map_err(|source| {
            match source.raw_os_error() {
                Some(libc::ESRCH) => Error::Gone { pid: self.pid },
                _ => Error::Signal {
                    pid: self.pid,
                    signal,
                    source,
                },
            }
        })
    }

    /// Sets every thread of the process to `nice`, with the process stopped, so that the
    /// thread ids read from /proc stay its own until they are reniced and checked again.
    /// Returns how many threads were set.
    pub fn renice(&self, nice: i32) -> Result<usize> {
        self.signal(libc::SIGSTOP)?;
        let set = self.renice_stopped(nice);
        // Continued whatever happened; a process that went meanwhile needs nothing.
        match self.signal(libc::SIGCONT) {
            Ok(()) | Err(Error::Gone { .. }) => {}
            Err(e) => return Err(e),
        }
        set
    }

    fn renice_stopped(&self, nice: i32) -> Result<usize> {
        let tids = self.wait_stopped()?;
        let mut set = 0;
        for &tid in &tids {
            // SAFETY: plain integers; PRIO_PROCESS with a tid means that thread.
            let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
            if r == 0 {
                set += 1;
                continue;
            }
            let source = io::Error::last_os_error();
            return Err(Error::Renice {
                pid: self.pid,
                tid,
                nice,
                source,
            });
        }
        // Still alive with the same threads: no thread ended (a stopped one only ends
        // with the whole process), so each id was its own when it was set.
        if !self.alive() || self.own_threads()? != tids {
            return Err(Error::Gone { pid: self.pid });
        }
        Ok(set)
    }

    /// Waits until every thread of the stopped process is stopped; returns their ids.
    fn wait_stopped(&self) -> Result<Vec<u32>> {
        let end = Instant::now() + STOP_TIMEOUT;
        loop {
            let tids = self.own_threads()?;
            if !self.alive() {
                return Err(Error::Gone { pid: self.pid });
            }
            let stopped = |tid: &u32| {
                std::fs::read_to_string(format!("/proc/{}/task/{tid}/stat", self.pid))
                    .is_ok_and(|s| procfs::stat_field(&s, 3).is_some_and(|st| st == "T"))
            };
            if tids.iter().all(stopped) {
                return Ok(tids);
            }
            if Instant::now() > end {
                return Err(Error::NotStopped {
                    pid: self.pid,
                    after: STOP_TIMEOUT,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The process's own threads: not the kernel's io_uring workers among them (QEMU's
    /// event loop uses io_uring), which come and go, never stop for a signal, and run at
    /// the kernel's priority, not at one set here.
    fn own_threads(&self) -> Result<Vec<u32>> {
        let worker = |tid: &u32| {
            std::fs::read_to_string(format!("/proc/{}/task/{tid}/stat", self.pid))
                .ok()
                .and_then(|s| procfs::stat_field(&s, 9)?.parse::<u32>().ok())
                .is_some_and(|flags| flags & PF_IO_WORKER != 0)
        };
        Ok(threads(self.pid)?
            .into_iter()
            .filter(|t| !worker(t))
            .collect())
    }
}

/// What the supervisor reads of a process's stat line.
struct Stat {
    comm: String,
    parent: u32,
}

/// `/proc/<pid>/<file>` and its text; Gone if the process is.
fn read(pid: u32, file: &str) -> Result<(PathBuf, String)> {
    let path = PathBuf::from(format!("/proc/{pid}/{file}"));
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok((path, text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::Gone { pid }),
        Err(source) => Err(Error::Read { path, source }),
    }
}

fn stat(pid: u32) -> Result<Stat> {
    let (path, line) = read(pid, "stat")?;
    let comm = line
        .find('(')
        .zip(line.rfind(')'))
        .map(|(a, b)| line[a + 1..b].to_string());
    let parent = procfs::stat_field(&line, 4).and_then(|p| p.parse().ok());
    match (comm, parent) {
        (Some(comm), Some(parent)) => Ok(Stat { comm, parent }),
        _ => Err(Error::Read {
            path,
            source: io::Error::new(io::ErrorKind::InvalidData, "not a stat line"),
        }),
    }
}

/// The real uid of `pid`: the first number of the "Uid:" line of its status.
pub fn real_uid(pid: u32) -> Result<u32> {
    let (path, status) = read(pid, "status")?;
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
    use crate::priority::nice_of;
    use std::process::{Child, Command};

    /// `sleep` under a QEMU's name, as the supervisor's tests' stand-in for a QEMU.
    fn fake_qemu(dir: &std::path::Path) -> Child {
        let exe = dir.join("qemu-system-x86_64");
        std::fs::copy("/bin/sleep", &exe).unwrap();
        Command::new(exe).arg("30").spawn().unwrap()
    }

    #[test]
    fn a_pidfd_of_ones_own_process_passes_and_others_do_not() {
        let me = std::process::id();
        let uid = nix::unistd::getuid().as_raw();
        let t = Target::check(pidfd_open(me).unwrap(), me, uid).unwrap();
        assert!(t.alive());
        assert_eq!(t.parent, nix::unistd::getppid().as_raw() as u32);
        assert!(matches!(t.require_qemu(), Err(Error::NotQemu { .. })));
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
    fn a_process_that_has_ended_is_gone_even_unreaped() {
        let mut child = Command::new("sleep").arg("0.3").spawn().unwrap();
        let pid = child.id();
        let fd = pidfd_open(pid).unwrap();
        let uid = nix::unistd::getuid().as_raw();
        let t = Target::check(fd.try_clone().unwrap(), pid, uid).unwrap();
        // A zombie: its pid is still taken, but it has exited.
        let end = Instant::now() + Duration::from_secs(5);
        while t.alive() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!t.alive());
        assert!(matches!(t.renice(5), Err(Error::Gone { .. })));
        child.wait().unwrap();
        assert!(matches!(
            Target::check(fd, pid, uid),
            Err(Error::Gone { .. })
        ));
    }

    #[test]
    fn a_qemu_is_reniced_while_stopped_and_goes_on_after() {
        let dir = tempfile::tempdir().unwrap();
        let mut qemu = fake_qemu(dir.path());
        let pid = qemu.id();
        let uid = nix::unistd::getuid().as_raw();
        let t = Target::check(pidfd_open(pid).unwrap(), pid, uid).unwrap();
        t.require_qemu().unwrap();
        assert_eq!(t.parent, std::process::id());
        // Lowering a priority needs no privilege.
        assert_eq!(t.renice(7).unwrap(), 1);
        assert_eq!(nice_of(pid, pid).unwrap(), 7);
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        assert_ne!(procfs::stat_field(&state, 3), Some("T"), "left stopped");
        qemu.kill().unwrap();
        qemu.wait().unwrap();
    }
}
