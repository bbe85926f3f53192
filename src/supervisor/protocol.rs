//! What gns3-qemud and gns3-qemud-supervisor say to each other over the supervisor's unix
//! stream socket.
//!
//! One request per line, one reply per line, both JSON. Every request names its version, so
//! a daemon and a supervisor from different releases refuse each other instead of
//! misreading. Version 2:
//!
//! ```text
//! {"version":2,"request":{"renice":{"pid":4242,"nice":-5}}}      + the process's pidfd
//! {"version":2,"request":{"throttle":{"pid":4242,"percent":30}}} + the process's pidfd
//! {"version":2,"request":{"release":{"pid":4242}}}               (the process has exited)
//! ```
//!
//! `renice` sets the nice value of every thread of the process. `throttle` limits it to
//! `percent` of one CPU (0 lifts the limit) through a cgroup v1 cpu controller. `release`
//! removes the cgroup `throttle` made for a process that has exited.
//!
//! What the supervisor checks, and why that is enough for root never to change a process
//! that is not one of the daemon's QEMUs:
//! - the peer's uid (SO_PEERCRED) is the daemon's;
//! - the pidfd, sent as SCM_RIGHTS with the line's first bytes, holds `pid`, whose real uid
//!   is the peer's and whose command name is a QEMU system emulator's;
//! - it acts only on what the pidfd pins. `renice` stops the process through the pidfd, so
//!   that no thread of it can end or start, sets each thread, checks through the pidfd that
//!   the process still lives with the same threads, and continues it. `throttle` moves a
//!   process into its cgroup only while it is the peer's child: the daemon does not reap a
//!   QEMU while a request about it is unanswered, so its pid cannot be freed, let alone
//!   given to another process, before the move; a QEMU already in its cgroup only has the
//!   cgroup's limit changed, which no other process is in. Neither keeps acting by number
//!   afterwards (no root `cpulimit`: without a cpu controller the daemon limits CPU itself,
//!   as its own uid, which can signal nothing but its own processes).
//!
//! Replies: `"done"`, `{"refused":"why"}` (not allowed: another uid, not a QEMU, a bad
//! request), `{"failed":"why"}` (allowed, but the system said no) or
//! `{"unsupported":"why"}` (no cpu controller here: the daemon limits CPU itself).

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};
use std::io::{self, IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

pub const VERSION: u32 = 2;

/// The longest line either side reads; a request is well under 100 bytes.
const MAX_LINE: usize = 4096;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub version: u32,
    pub request: Request,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Renice { pid: u32, nice: i32 },
    Throttle { pid: u32, percent: u32 },
    Release { pid: u32 },
}

impl Request {
    pub fn pid(self) -> u32 {
        match self {
            Request::Renice { pid, .. }
            | Request::Throttle { pid, .. }
            | Request::Release { pid } => pid,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Done,
    Refused(String),
    Failed(String),
    Unsupported(String),
}

/// One end of a connection: lines out, lines and descriptors in.
pub struct Link {
    stream: UnixStream,
    /// Bytes read past the end of the last line.
    buffered: Vec<u8>,
}

impl Link {
    pub fn new(stream: UnixStream) -> Link {
        Link {
            stream,
            buffered: Vec::new(),
        }
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Writes `value` as one line, with `fd` attached to its first bytes.
    pub fn send<T: Serialize>(&mut self, value: &T, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
        line.push(b'\n');
        let sent = match fd {
            Some(fd) => {
                let fds = [fd.as_raw_fd()];
                sendmsg::<()>(
                    self.stream.as_raw_fd(),
                    &[IoSlice::new(&line)],
                    &[ControlMessage::ScmRights(&fds)],
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )?
            }
            None => 0,
        };
        self.stream.write_all(&line[sent..])
    }

    /// Reads one line and the descriptors that came with it; None when the peer has closed.
    pub fn receive(&mut self) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
        let mut fds = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            if let Some(end) = self.buffered.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buffered.drain(..=end).collect();
                line.pop();
                return Ok(Some((line, fds)));
            }
            if self.buffered.len() > MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a line longer than {MAX_LINE} bytes"),
                ));
            }
            let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = recvmsg::<()>(
                self.stream.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )?;
            for c in msg.cmsgs()? {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    // SAFETY: the kernel just installed these descriptors in our table for us.
                    fds.extend(
                        raw.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
            let n = msg.bytes;
            if n == 0 {
                return if self.buffered.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed in the middle of a line",
                    ))
                };
            }
            self.buffered.extend_from_slice(&buf[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_lines_are_what_goes_on_the_wire() {
        let cases = [
            (
                Request::Renice {
                    pid: 4242,
                    nice: -5,
                },
                r#"{"version":2,"request":{"renice":{"pid":4242,"nice":-5}}}"#,
            ),
            (
                Request::Throttle {
                    pid: 4242,
                    percent: 30,
                },
                r#"{"version":2,"request":{"throttle":{"pid":4242,"percent":30}}}"#,
            ),
            (
                Request::Release { pid: 4242 },
                r#"{"version":2,"request":{"release":{"pid":4242}}}"#,
            ),
        ];
        for (request, line) in cases {
            let e = Envelope {
                version: VERSION,
                request,
            };
            assert_eq!(serde_json::to_string(&e).unwrap(), line);
            assert_eq!(serde_json::from_str::<Envelope>(line).unwrap(), e);
        }
        assert_eq!(serde_json::to_string(&Reply::Done).unwrap(), r#""done""#);
        assert_eq!(
            serde_json::to_string(&Reply::Refused("no".into())).unwrap(),
            r#"{"refused":"no"}"#
        );
        assert!(serde_json::from_str::<Envelope>(
            r#"{"version":2,"request":{"renice":{"pid":1,"nice":0,"uid":0}}}"#
        )
        .is_err());
    }

    #[test]
    fn a_line_and_its_descriptor_arrive_together() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (Link::new(a), Link::new(b));
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let request = Envelope {
            version: VERSION,
            request: Request::Release { pid: 7 },
        };
        a.send(&request, Some(std::os::fd::AsFd::as_fd(&file)))
            .unwrap();
        a.send(&Reply::Done, None).unwrap();
        let (line, fds) = b.receive().unwrap().unwrap();
        assert_eq!(serde_json::from_slice::<Envelope>(&line).unwrap(), request);
        assert_eq!(fds.len(), 1);
        let (line, fds) = b.receive().unwrap().unwrap();
        assert_eq!(serde_json::from_slice::<Reply>(&line).unwrap(), Reply::Done);
        assert!(fds.is_empty());
        drop(a);
        assert!(b.receive().unwrap().is_none());
    }
}
