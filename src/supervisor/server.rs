//! The supervisor's loop: one thread per connection, one request at a time on each. Only
//! peers whose uid (SO_PEERCRED) is the daemon's are served, and only about processes whose
//! real uid is that same uid: root lends the daemon exactly renice and CPU limits over its
//! own QEMUs, nothing else.

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;

use super::cgroup::Hierarchy;
use super::error::{Error, Result};
use super::protocol::{Envelope, Link, Reply, Request, VERSION};
use super::target::Target;
use super::{cpulimit, priority};

pub struct Supervisor {
    /// The only uid served.
    pub daemon_uid: u32,
    /// Where CPU limits go; None means cpulimit.
    pub cgroups: Option<Hierarchy>,
}

impl Supervisor {
    pub fn serve(self, listener: UnixListener) -> ! {
        let me = Arc::new(self);
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    let me = me.clone();
                    std::thread::spawn(move || me.connection(stream));
                }
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        }
    }

    fn connection(&self, stream: UnixStream) {
        let peer = match getsockopt(&stream, PeerCredentials) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("cannot tell who connected: {e}");
                return;
            }
        };
        let mut link = Link::new(stream);
        let uid = peer.uid();
        if uid != self.daemon_uid {
            eprintln!(
                "refused a connection from uid {uid} (pid {}): only uid {} is served",
                peer.pid(),
                self.daemon_uid
            );
            let why = format!(
                "this supervisor serves uid {} only, not uid {uid}",
                self.daemon_uid
            );
            let _ = link.send(&Reply::Refused(why), None);
            return;
        }
        loop {
            let (line, fds) = match link.receive() {
                Ok(Some(message)) => message,
                Ok(None) => return,
                Err(e) => {
                    eprintln!("connection from pid {}: {e}", peer.pid());
                    return;
                }
            };
            let reply = match self.handle(&line, fds, uid) {
                Ok(()) => Reply::Done,
                Err(e) => {
                    eprintln!("{e}");
                    if e.is_refusal() {
                        Reply::Refused(e.to_string())
                    } else {
                        Reply::Failed(e.to_string())
                    }
                }
            };
            if let Err(e) = link.send(&reply, None) {
                eprintln!("cannot answer pid {}: {e}", peer.pid());
                return;
            }
        }
    }

    fn handle(&self, line: &[u8], mut fds: Vec<OwnedFd>, caller: u32) -> Result<()> {
        let envelope: Envelope = serde_json::from_slice(line)
            .map_err(|e| Error::BadRequest(format!("not a request of version {VERSION}: {e}")))?;
        if envelope.version != VERSION {
            return Err(Error::BadRequest(format!(
                "version {} is not spoken here; this supervisor speaks version {VERSION}",
                envelope.version
            )));
        }
        let request = envelope.request;
        let target = match (request.needs_pidfd(), fds.pop()) {
            (true, Some(pidfd)) => Some(Target::check(pidfd, request.pid(), caller)?),
            (true, None) => {
                return Err(Error::BadRequest(format!(
                    "{request:?} needs the process's pidfd"
                )))
            }
            (false, _) => None,
        };
        if let Some(cgroups) = &self.cgroups {
            for pid in cgroups.sweep(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists()) {
                eprintln!("removed the cgroup of process {pid}, which has exited");
            }
        }
        match request {
            Request::Renice { pid, nice } => {
                let threads = priority::renice(pid, nice)?;
                eprintln!("process {pid}: nice {nice} on {threads} threads");
            }
            Request::Throttle { pid, percent } => {
                self.throttle(pid, percent)?;
                eprintln!("process {pid}: CPU limit {percent}%");
            }
            Request::Release { pid } => self.release(pid, caller)?,
        }
        // If the process died while we worked, its pid may be someone else's now: say so.
        match target {
            Some(t) if !t.alive() => Err(Error::Gone { pid: t.pid }),
            _ => Ok(()),
        }
    }

    fn throttle(&self, pid: u32, percent: u32) -> Result<()> {
        match &self.cgroups {
            Some(cgroups) => cgroups.limit(pid, percent),
            None if percent == 0 => {
                cpulimit::stop(pid);
                Ok(())
            }
            None => cpulimit::start(pid, percent),
        }
    }

    /// After process `pid` has exited: its cgroup and cpulimit go. A pid that lives again
    /// (recycled) and is not the caller's is left alone.
    fn release(&self, pid: u32, caller: u32) -> Result<()> {
        if let Ok(owner) = super::target::real_uid(pid) {
            if owner != caller {
                return Err(Error::NotYours { pid, owner, caller });
            }
        }
        cpulimit::stop(pid);
        match &self.cgroups {
            Some(cgroups) => cgroups.release(pid),
            None => Ok(()),
        }
    }
}
