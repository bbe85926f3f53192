//! OpenCapture's live stream: a task per reader follows the `.part` QEMU writes from its
//! first byte, restamps each complete record with the timeline as it is then, and writes
//! it to the reader's socket; once the capture ends it sends the rest and closes. It never
//! waits on the actor, and ends early when the reader goes.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::clock::Clock;
use super::pcap::{self, Order};

/// How often a stream looks for new records: well within the 10 ms a record's stamp is
/// right to would be needless; a viewer sees frames within this.
const POLL: Duration = Duration::from_millis(20);

/// What a stream follows.
pub struct Feed {
    pub start_ts: i64,
    pub clock: Arc<Clock>,
    /// True once the capture has ended (QEMU has closed the file); a dropped sender too.
    pub ended: watch::Receiver<bool>,
}

/// Opens `part` now (it may be removed once the capture ends) and returns the reader's
/// end of a socket the stream is written to.
pub fn open(part: &Path, feed: Feed) -> std::io::Result<OwnedFd> {
    let file = std::fs::File::open(part)?;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    ours.set_nonblocking(true)?;
    let ours = tokio::net::UnixStream::from_std(ours)?;
    tokio::spawn(async move {
        if let Err(e) = follow(tokio::fs::File::from_std(file), feed, ours).await {
            tracing::debug!("a capture stream ended: {e}");
        }
    });
    Ok(theirs.into())
}

async fn follow(
    mut file: tokio::fs::File,
    mut feed: Feed,
    mut out: tokio::net::UnixStream,
) -> std::io::Result<()> {
    let mut pending = Vec::new();
    let mut chunk = vec![0; 64 << 10];
    let mut order: Option<Order> = None;
    let mut ended = false;
    loop {
        let was_ended = ended || *feed.ended.borrow();
        let n = file.read(&mut chunk).await?;
        if n == 0 {
            if was_ended {
                break;
            }
            let mut probe = [0u8; 256];
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                changed = feed.ended.changed() => ended |= changed.is_err(),
                // The reader closed its end (or wrote to it, which is dropped).
                readable = out.readable() => {
                    readable?;
                    match out.try_read(&mut probe) {
                        Ok(0) => return Ok(()),
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            continue;
        }
        pending.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        if order.is_none() {
            if pending.len() < pcap::HEADER {
                continue;
            }
            order = Order::of(&pending);
            if order.is_none() {
                return Err(std::io::Error::other("the capture file is not pcap"));
            }
            at = pcap::HEADER;
        }
        if let Some(order) = order {
            let timeline = feed.clock.timeline();
            while let Some(len) = pcap::record_len(order, &pending[at..]) {
                pcap::restamp(order, &mut pending[at..at + len], feed.start_ts, &timeline);
                at += len;
            }
        }
        out.write_all(&pending[..at]).await?;
        pending.drain(..at);
    }
    out.shutdown().await
}
