//! The supervisor's loop: one thread per connection, one request at a time on each, at most
//! [`MAX_CONNECTIONS`] at once and one at a time per peer process (a second waits for the
//! first), so no peer makes root spawn threads without end. Only peers whose uid
//! (SO_PEERCRED) is the daemon's are served, and only about QEMUs of that same uid: root
//! lends the daemon exactly renice and CPU limits over its own QEMUs, nothing else (what is
//! checked, and why it holds when pids are reused: `protocol.rs`).

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::cgroup::Hierarchy;
use super::error::{Error, Result};
use super::protocol::{Envelope, Link, Reply, Request, VERSION};
use super::target::Target;

/// Connections served at once (the daemon holds one); more are refused.
pub const MAX_CONNECTIONS: usize = 16;

pub struct Supervisor {
    /// The only uid served.
    pub daemon_uid: u32,
    /// Where CPU limits go; None means cpulimit.
    pub cgroups: Option<Hierarchy>,
    pub slots: Slots,
    /// For tests only: a pause between checking a process and acting on it, the window in
    /// which it may exit and its pid be given to another.
    pub delay_before_acting: Option<Duration>,
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
            let reply = match self.handle(&line, fds, uid, peer.pid() as u32) {
                Ok(()) => Reply::Done,
                Err(e) => {
                    eprintln!("{e}");
                    match e {
                        Error::NoCpuController => Reply::Unsupported(e.to_string()),
                        e if e.is_refusal() => Reply::Refused(e.to_string()),
                        e => Reply::Failed(e.to_string()),
                    }
                }
            };
            if let Err(e) = link.send(&reply, None) {
                eprintln!("cannot answer pid {}: {e}", peer.pid());
                return;
            }
        }
    }

    fn handle(&self, line: &[u8], mut fds: Vec<OwnedFd>, caller: u32, peer: u32) -> Result<()> {
        let envelope: Envelope = serde_json::from_slice(line)
            .map_err(|e| Error::BadRequest(format!("not a request of version {VERSION}: {e}")))?;
        if envelope.version != VERSION {
            return Err(Error::BadRequest(format!(
                "version {} is not spoken here; this supervisor speaks version {VERSION}",
                envelope.version
            )));
        }
        let request = envelope.request;
        if let Some(cgroups) = &self.cgroups {
            for pid in cgroups.sweep(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists()) {
                eprintln!("removed the cgroup of process {pid}, which has exited");
            }
        }
        let (pid, target) = match request {
            Request::Release { pid } => return self.release(pid),
            Request::Renice { pid, .. } | Request::Throttle { pid, .. } => {
                let pidfd = fds.pop().ok_or_else(|| {
                    Error::BadRequest(format!("{request:?} needs the process's pidfd"))
                })?;
                (pid, Target::check(pidfd, pid, caller)?)
            }
        };
        target.require_qemu()?;
        if let Some(delay) = self.delay_before_acting {
            eprintln!("process {pid}: checked; acting in {} ms", delay.as_millis());
            std::thread::sleep(delay);
        }
        match request {
            Request::Renice { nice, .. } => {
                let threads = target.renice(nice)?;
                eprintln!("process {pid}: nice {nice} on {threads} threads");
            }
            Request::Throttle { percent, .. } => {
                let cgroups = self.cgroups.as_ref().ok_or(Error::NoCpuController)?;
                // Checked again after the pause: a child that has exited may be reaped now.
                if !target.alive() {
                    return Err(Error::Gone { pid });
                }
                cgroups.limit(pid, percent, target.parent == peer)?;
                eprintln!("process {pid}: CPU limit {percent}%");
            }
            Request::Release { .. } => {}
        }
        Ok(())
    }

    /// After process `pid` has exited, its cgroup goes. A cgroup that still holds a
    /// process cannot be removed, so a recycled or wrong pid changes nothing.
    fn release(&self, pid: u32) -> Result<()> {
        match &self.cgroups {
            Some(cgroups) => cgroups.release(pid),
            None => Ok(()),
        }
    }
}
