//! The supervisor's loop: one thread per connection, one request at a time on each, at most
//! [`MAX_CONNECTIONS`] at once and one at a time per peer process (a second waits for the
//! first), so no peer makes root spawn threads without end. Only peers whose uid
//! (SO_PEERCRED) is the daemon's are served, and only about processes whose real uid is that
//! same uid: root lends the daemon exactly renice and CPU limits over its own QEMUs,
//! nothing else.

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::cgroup::Hierarchy;
use super::error::{Error, Result};
use super::protocol::{Envelope, Link, Reply, Request, VERSION};
use super::target::Target;
use super::{cpulimit, priority};

/// Connections served at once (the daemon holds one); more are refused.
pub const MAX_CONNECTIONS: usize = 16;

pub struct Supervisor {
    /// The only uid served.
    pub daemon_uid: u32,
    /// Where CPU limits go; None means cpulimit.
    pub cgroups: Option<Hierarchy>,
    pub slots: Slots,
}

/// The connections open, and the peer processes being served.
#[derive(Default)]
pub struct Slots {
    open: Mutex<(usize, HashSet<i32>)>,
    freed: Condvar,
}

impl Slots {
    fn lock(&self) -> MutexGuard<'_, (usize, HashSet<i32>)> {
        // A thread that panicked holding it left counts that are still right.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a connection slot; false if all are taken.
    fn enter(&self) -> bool {
        let mut open = self.lock();
        if open.0 >= MAX_CONNECTIONS {
            return false;
        }
        open.0 += 1;
        true
    }

    fn leave(&self) {
        self.lock().0 -= 1;
    }

    /// Waits until no other connection of process `pid` is being served; it is served
    /// until the turn is dropped.
    fn turn(&self, pid: i32) -> Turn<'_> {
        let mut open = self.lock();
        while open.1.contains(&pid) {
            open = self.freed.wait(open).unwrap_or_else(|e| e.into_inner());
        }
        open.1.insert(pid);
        Turn { slots: self, pid }
    }
}

struct Turn<'a> {
    slots: &'a Slots,
    pid: i32,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.slots.lock().1.remove(&self.pid);
        self.slots.freed.notify_all();
    }
}

/// Answers `stream` once, and closes it.
fn refuse(stream: UnixStream, reply: Reply) {
    if let Err(e) = Link::new(stream).send(&reply, None) {
        eprintln!("cannot answer a connection: {e}");
    }
}

impl Supervisor {
    pub fn serve(self, listener: UnixListener) -> ! {
        let me = Arc::new(self);
        loop {
            match listener.accept() {
                Ok((stream, _)) => me.clone().start(stream),
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        }
    }

    /// Serves `stream` on a thread of its own, if a slot and a thread can be had.
    fn start(self: Arc<Self>, stream: UnixStream) {
        if !self.slots.enter() {
            eprintln!("refused a connection: {MAX_CONNECTIONS} are open already");
            let why = format!(
                "this supervisor serves at most {MAX_CONNECTIONS} connections at once; close one"
            );
            return refuse(stream, Reply::Refused(why));
        }
        // Kept to answer on if the thread cannot be made: the closure owns the original.
        let answer = stream.try_clone();
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("connection".into())
            .spawn(move || {
                me.connection(stream);
                me.slots.leave();
            });
        if let Err(e) = spawned {
            self.slots.leave();
            eprintln!("cannot start a thread for a connection: {e}");
            if let Ok(stream) = answer {
                refuse(
                    stream,
                    Reply::Failed(format!("the supervisor cannot start a thread: {e}")),
                );
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
        let _turn = self.slots.turn(peer.pid());
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
