//! A QMP client: JSON lines over the VM's unix socket. Replies are matched to commands by
//! id; events go to the VM's actor as they come.

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use super::capture::clock::{self, Clock};

/// The longest line accepted from QEMU; `query-qmp-schema`, the largest reply, is ~200 KiB.
const MAX_LINE: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("QEMU closed the QMP connection")]
    Closed,
    #[error("unexpected message from QEMU: {0}")]
    Malformed(String),
    #[error("{desc} ({class})")]
    Command { class: String, desc: String },
    #[error("{0}")]
    Timeout(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub name: String,
    pub data: Value,
}

#[derive(Debug, PartialEq)]
pub enum Message {
    Greeting,
    Return {
        id: Option<u64>,
        value: Value,
    },
    Error {
        id: Option<u64>,
        class: String,
        desc: String,
    },
    Event(Event),
}

/// Reads one line of QMP. Pure, so it can be fuzzed.
pub fn parse(line: &[u8]) -> Result<Message> {
    let v: Value =
        serde_json::from_slice(line).map_err(|e| Error::Malformed(format!("not JSON ({e})")))?;
    let Value::Object(mut m) = v else {
        return Err(Error::Malformed("not a JSON object".into()));
    };
    let id = m.get("id").and_then(Value::as_u64);
    if m.contains_key("QMP") {
        return Ok(Message::Greeting);
    }
    if let Some(value) = m.remove("return") {
        return Ok(Message::Return { id, value });
    }
    if let Some(Value::Object(err)) = m.remove("error") {
        let text = |k: &str| err.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        return Ok(Message::Error {
            id,
            class: text("class"),
            desc: text("desc"),
        });
    }
    if let Some(Value::String(name)) = m.remove("event") {
        let data = m.remove("data").unwrap_or(Value::Object(Map::new()));
        return Ok(Message::Event(Event { name, data }));
    }
    Err(Error::Malformed(
        "neither a greeting, a reply nor an event".into(),
    ))
}

/// The replies still awaited, by command id.
type Awaited = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value>>>>>;

pub struct Qmp {
    writer: OwnedWriteHalf,
    awaited: Awaited,
    next_id: u64,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Qmp {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Qmp {
    /// Reads the greeting, leaves negotiation mode, and from then on sends every event to
    /// `events`. The channel closes when QEMU closes the connection.
    /// `clock`, if any, follows the STOP and RESUME events as they are read.
    pub async fn handshake(
        stream: UnixStream,
        events: mpsc::UnboundedSender<Event>,
        clock: Option<Arc<Clock>>,
        timeout: Duration,
    ) -> Result<Qmp> {
        let (read, writer) = stream.into_split();
        let mut read = BufReader::new(read);
        let greeting = tokio::time::timeout(timeout, read_line(&mut read))
            .await
            .map_err(|_| Error::Timeout("the QMP greeting".into()))??;
        if parse(&greeting)? != Message::Greeting {
            return Err(Error::Malformed(
                "the first message is not a QMP greeting".into(),
            ));
        }
        let awaited: Awaited = Arc::default();
        let reader = tokio::spawn(read_loop(read, awaited.clone(), events, clock));
        let mut qmp = Qmp {
            writer,
            awaited,
            next_id: 1,
            reader,
        };
        qmp.execute("qmp_capabilities", None, timeout).await?;
        Ok(qmp)
    }

    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value> {
        self.send(command, arguments, None, timeout).await
    }

    /// Runs a command with a file descriptor attached (SCM_RIGHTS), as `getfd` needs.
    pub async fn execute_with_fd(
        &mut self,
        command: &str,
        arguments: Value,
        fd: BorrowedFd<'_>,
        timeout: Duration,
    ) -> Result<Value> {
        self.send(command, Some(arguments), Some(fd), timeout).await
    }

    async fn send(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        fd: Option<BorrowedFd<'_>>,
        timeout: Duration,
    ) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let (tx, rx) = oneshot::channel();
        lock(&self.awaited).insert(id, tx);
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let mut line = msg.to_string().into_bytes();
        line.push(b'\n');
        let sent = tokio::time::timeout(timeout, self.write(&line, fd)).await;
        let answer = match sent {
            Ok(Ok(())) => tokio::time::timeout(timeout, rx).await,
            Ok(Err(e)) => {
                lock(&self.awaited).remove(&id);
                return Err(Error::Io(e));
            }
            Err(_) => {
                lock(&self.awaited).remove(&id);
                return Err(Error::Timeout(format!("'{command}'")));
            }
        };
        match answer {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => {
                lock(&self.awaited).remove(&id);
                Err(Error::Timeout(format!("'{command}'")))
            }
        }
    }

    /// Writes a line; the fd, if any, rides along with its first bytes.
    async fn write(&mut self, line: &[u8], fd: Option<BorrowedFd<'_>>) -> std::io::Result<()> {
        let Some(fd) = fd else {
            return self.writer.write_all(line).await;
        };
        let stream: &UnixStream = self.writer.as_ref();
        let fds = [fd.as_raw_fd()];
        let sent = loop {
            stream.writable().await?;
            let attempt = stream.try_io(Interest::WRITABLE, || {
                sendmsg::<()>(
                    stream.as_raw_fd(),
                    &[IoSlice::new(line)],
                    &[ControlMessage::ScmRights(&fds)],
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(std::io::Error::from)
            });
            match attempt {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        self.writer.write_all(&line[sent..]).await
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The map stays consistent whatever a panicking holder did: entries are only inserted
    // and removed whole.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Result<Vec<u8>> {
    let mut line = Vec::new();
    let n = AsyncReadExt::take(&mut *r, MAX_LINE)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Err(Error::Closed);
    }
    if line.last() != Some(&b'\n') {
        return Err(Error::Malformed(format!(
            "a line longer than {MAX_LINE} bytes or cut short"
        )));
    }
    Ok(line)
}

async fn read_loop<R: tokio::io::AsyncBufRead + Unpin>(
    mut read: R,
    awaited: Awaited,
    events: mpsc::UnboundedSender<Event>,
    clock: Option<Arc<Clock>>,
) {
    loop {
        let line = match read_line(&mut read).await {
            Ok(line) => line,
            Err(Error::Closed) => break,
            Err(e) => {
                tracing::warn!("QMP connection dropped: {e}");
                break;
            }
        };
        let (id, result) = match parse(&line) {
            Ok(Message::Event(e)) => {
                if let Some(clock) = clock.as_ref().filter(|_| clock::moves(&e.name)) {
                    if let Some(wall) = clock::event_time(&line) {
                        clock.event(&e.name, wall);
                    }
                }
                let _ = events.send(e);
                continue;
            }
            Ok(Message::Return { id, value }) => (id, Ok(value)),
            Ok(Message::Error { id, class, desc }) => (id, Err(Error::Command { class, desc })),
            Ok(Message::Greeting) => continue,
            Err(e) => {
                tracing::warn!("ignoring a QMP line: {e}");
                continue;
            }
        };
        if let Some(tx) = id.and_then(|id| lock(&awaited).remove(&id)) {
            let _ = tx.send(result);
        }
    }
    // Dropping the senders wakes every caller still waiting with `Closed`.
    lock(&awaited).clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_four_kinds_of_message() {
        assert_eq!(
            parse(br#"{"QMP": {"version": {}, "capabilities": ["oob"]}}"#).unwrap(),
            Message::Greeting
        );
        assert_eq!(
            parse(br#"{"return": {}, "id": 7}"#).unwrap(),
            Message::Return {
                id: Some(7),
                value: json!({})
            }
        );
        assert_eq!(
            parse(br#"{"id": 3, "error": {"class": "GenericError", "desc": "no"}}"#).unwrap(),
            Message::Error {
                id: Some(3),
                class: "GenericError".into(),
                desc: "no".into()
            }
        );
        assert_eq!(
            parse(br#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}"#).unwrap(),
            Message::Event(Event {
                name: "STOP".into(),
                data: json!({})
            })
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            &b"{"[..],
            b"[]",
            b"42",
            b"{\"what\": 1}",
            b"\xff\xfe",
            b"{\"event\": 5}",
        ] {
            assert!(matches!(parse(bad), Err(Error::Malformed(_))), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn talks_to_a_peer_and_times_out() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let peer = tokio::spawn(async move {
            let (r, mut w) = theirs.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"{\"QMP\": {}}\n").await.unwrap();
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            assert!(line.contains("qmp_capabilities"));
            w.write_all(b"{\"return\": {}, \"id\": 1}\n").await.unwrap();
            line.clear();
            r.read_line(&mut line).await.unwrap();
            w.write_all(
                b"{\"event\": \"STOP\"}\n{\"return\": {\"status\": \"paused\"}, \"id\": 2}\n",
            )
            .await
            .unwrap();
            // never answers id 3
            line.clear();
            r.read_line(&mut line).await.unwrap();
            (r, w)
        });
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut qmp = Qmp::handshake(ours, tx, None, Duration::from_secs(5))
            .await
            .unwrap();
        let v = qmp
            .execute("query-status", None, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(v["status"], "paused");
        assert_eq!(rx.recv().await.unwrap().name, "STOP");
        let e = qmp
            .execute("cont", None, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Timeout(_)));
        drop(peer.await.unwrap());
        let e = qmp
            .execute("cont", None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Closed | Error::Io(_)), "{e:?}");
    }
}
