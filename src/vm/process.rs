//! The QEMU process: spawned in a session of its own (it outlives the daemon), held by a
//! pidfd so that its exit wakes the actor at once and a recycled pid is never signalled.

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use tokio::io::unix::AsyncFd;

use super::cmdline::FIRST_FD;

/// How a QEMU process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Not our child (found again after a daemon restart): the status went to init.
    Unknown,
}

impl Exit {
    /// The `ExitStatus` property: the exit code, minus the signal number, or -1.
    pub fn status(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => -s,
            Exit::Unknown => -1,
        }
    }

    pub fn describe(self) -> String {
        match self {
            Exit::Code(c) => format!("QEMU exited with status {c}"),
            Exit::Signal(s) => {
                let name = Signal::try_from(s).map(Signal::as_str).unwrap_or("?");
                format!("QEMU was killed by signal {s} ({name})")
            }
            Exit::Unknown => "QEMU exited".into(),
        }
    }
}

impl From<std::process::ExitStatus> for Exit {
    fn from(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(s)) => Exit::Signal(s),
            (None, None) => Exit::Unknown,
        }
    }
}

pub struct Process {
    pid: Pid,
    pidfd: AsyncFd<OwnedFd>,
    exit: Option<Exit>,
}

impl Process {
    /// Spawns `cmd` with stdout and stderr to `log`, `fds` as fds [`FIRST_FD`], +1, …, in
    /// `cwd`, at niceness `nice` when that is above 0 and the kernel lets the daemon lower
    /// its child so: from its first instruction, so that 20 QEMUs booting at once at a low
    /// priority do not keep the daemon from spawning the next ones. Whoever asked checks
    /// that it holds (a failure here is not one), and renices otherwise.
    pub fn spawn(
        cmd: &[String],
        cwd: &Path,
        log: File,
        fds: &[&OwnedFd],
        nice: i32,
    ) -> io::Result<Process> {
        let (program, args) = cmd
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command line"))?;
        let log_err = log.try_clone()?;
        // Moved above every target first, so that no dup2 overwrites one still to be moved.
        let parked: Vec<OwnedFd> = fds
            .iter()
            .map(|fd| {
                nix::fcntl::fcntl(
                    fd.as_raw_fd(),
                    nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(FIRST_FD + fds.len() as i32),
                )
                .map(|raw| {
                    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
                    unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) }
                })
                .map_err(io::Error::from)
            })
            .collect::<io::Result<_>>()?;
        let raw: Vec<i32> = parked.iter().map(AsRawFd::as_raw_fd).collect();
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(cwd)
            // The daemon's own malloc tuning (see the unit), not QEMU's.
            .env_remove("GLIBC_TUNABLES")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // SAFETY: between fork and exec the closure only makes async-signal-safe calls
        // (setsid, dup2, setpriority) and touches no memory of the parent but `raw`, read
        // only.
        unsafe {
            command.pre_exec(move || {
                if nice > 0 {
                    // The calling thread's, which exec keeps and QEMU's threads inherit.
                    libc::setpriority(libc::PRIO_PROCESS, 0, nice);
                }
                // A session of its own: a Ctrl-C or SIGTERM for the daemon's process group
                // must not reach the VMs, which outlive the daemon.
                nix::unistd::setsid()?;
                // dup2 clears FD_CLOEXEC on the copy; the parked ones close at exec.
                for (n, fd) in raw.iter().enumerate() {
                    if libc::dup2(*fd, FIRST_FD + n as i32) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        let pid = Pid::from_raw(child.id() as i32);
        // The std handle is dropped without a wait: the pidfd below is how the exit is seen,
        // and `exited` reaps the zombie.
        drop(child);
        Self::attach(pid)
    }

    /// Holds a running process by pid, our child or not.
    pub fn attach(pid: Pid) -> io::Result<Process> {
        let fd = crate::pidfd::open(pid.as_raw() as u32)?;
        // SAFETY: the OwnedFd is moved into the AsyncFd, which alone closes it, after it has
        // deregistered it.
        let pidfd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)? };
        Ok(Process {
            pid,
            pidfd,
            exit: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// The pidfd the process is held by, to hand to the supervisor.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.get_ref().as_fd()
    }

    /// Waits until the process has ended, and reaps it. Cancel-safe; returns at once once
    /// the exit is known.
    pub async fn exited(&mut self) -> Exit {
        loop {
            if let Some(exit) = self.exit {
                return exit;
            }
            let Ok(mut ready) = self.pidfd.readable().await else {
                // The pidfd cannot fail to poll; if it ever did, polling the pid is all we have.
                self.exit = Some(self.reap().unwrap_or(Exit::Unknown));
                continue;
            };
            match self.reap() {
                Some(exit) => self.exit = Some(exit),
                None => ready.clear_ready(),
            }
        }
    }

    /// The exit status if the process is gone, None if it still runs.
    fn reap(&self) -> Option<Exit> {
        match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => Some(Exit::Code(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => Some(Exit::Signal(sig as i32)),
            Ok(_) => None,
            // Not our child: readable pidfd means it has exited.
            Err(nix::errno::Errno::ECHILD) => Some(Exit::Unknown),
            Err(_) => None,
        }
    }

    /// Sends `sig` through the pidfd: it can never reach another process that got the pid.
    pub fn signal(&self, sig: Signal) -> io::Result<()> {
        if self.exit.is_some() {
            return Ok(());
        }
        if let Err(e) = crate::pidfd::send_signal(self.pidfd.get_ref().as_fd(), sig as i32) {
            // ESRCH: it has already exited, which is what the caller wanted.
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e);
            }
        }
        Ok(())
    }
}
