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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::capture::pcap::tests::file;
    use std::io::{Read, Write};

    #[tokio::test]
    async fn follows_the_file_restamped_until_the_capture_ends() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("eth0.pcap.part");
        let mut qemu = std::fs::File::create(&part).unwrap();
        // Written in pieces, as QEMU does: a record cut at first, then the rest.
        let whole = file(&[(1001, 5, b"first"), (1002, 7, b"second")]);
        let cut = pcap::HEADER + 16 + 5 + 3;
        qemu.write_all(&whole[..cut]).unwrap();
        let clock = Arc::new(Clock::fresh(dir.path().join("clock")));
        clock.event("RESUME", 2_000_000_000);
        let (ended, watched) = watch::channel(false);
        let feed = Feed {
            start_ts: 1000,
            clock,
            ended: watched,
        };
        let fd = open(&part, feed).unwrap();
        std::fs::remove_file(&part).unwrap();
        qemu.write_all(&whole[cut..]).unwrap();
        drop(qemu);
        ended.send(true).unwrap();
        let got = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            std::os::unix::net::UnixStream::from(fd)
                .read_to_end(&mut out)
                .unwrap();
            out
        })
        .await
        .unwrap();
        assert_eq!(got, file(&[(2001, 5, b"first"), (2002, 7, b"second")]));
    }
}
