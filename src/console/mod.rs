//! A running VM's serial console, owned by the daemon. One task reads the guest's serial
//! port at all times, so the guest never waits for a reader; what it reads goes into the
//! scrollback (`ring.rs`) and out to every viewer. Viewers come by D-Bus (a socket handed
//! over, raw) or by telnet (`listener.rs`); each gets the scrollback, then live output, and
//! what any of them types goes to the guest. A viewer that reads too slowly loses its
//! backlog, told so inline, and slows nobody else.
//!
//! This module knows nothing of VMs: the actor gives it the serial socket and a callback for
//! the number of viewers.

pub mod listener;
pub mod monitor;
pub mod ring;
pub mod telnet;

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, mpsc};
use tokio::task::{AbortHandle, JoinSet};

use crate::lock::lock;
use ring::Ring;

/// Output chunks a viewer may be behind before it loses them.
const BACKLOG_CHUNKS: usize = 64;
const READ_BUFFER: usize = 4096;

/// How a viewer's bytes are framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// The guest's bytes as they are (a socket handed over D-Bus).
    Raw,
    /// Telnet: negotiation first, 0xFF doubled, the client's commands stripped.
    Telnet,
}

/// What a viewer asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViewOptions {
    /// Send the scrollback first.
    pub replay: bool,
    /// What the viewer types is dropped.
    pub read_only: bool,
}

impl Default for ViewOptions {
    fn default() -> Self {
        ViewOptions {
            replay: true,
            read_only: false,
        }
    }
}

/// Output, and where in the console's whole output it starts: a viewer that skipped
/// chunks knows how many bytes it lost.
#[derive(Clone)]
struct Chunk {
    at: u64,
    data: Arc<[u8]>,
}

struct Shared {
    /// The scrollback, and the sender of live output: a viewer subscribes and reads the
    /// scrollback under the same lock as a chunk is stored and sent, so it gets each byte
    /// exactly once.
    out: Mutex<(Ring, broadcast::Sender<Chunk>)>,
    input: mpsc::Sender<Vec<u8>>,
    viewers: AtomicU32,
    on_viewers: Box<dyn Fn(u32) + Send + Sync>,
}

/// One VM's console; everything it runs ends when it is dropped.
pub struct Console {
    shared: Arc<Shared>,
    tasks: Mutex<JoinSet<()>>,
    pumps: [AbortHandle; 2],
}

impl Drop for Console {
    fn drop(&mut self) {
        for pump in &self.pumps {
            pump.abort();
        }
    }
}

impl Console {
    /// Starts reading the guest's serial port `serial` into `ring`. `on_viewers` is called
    /// with the number of viewers whenever it changes.
    pub fn attach(
        serial: UnixStream,
        ring: Ring,
        on_viewers: impl Fn(u32) + Send + Sync + 'static,
    ) -> Console {
        let (live, _) = broadcast::channel(BACKLOG_CHUNKS);
        let (input, keys) = mpsc::channel(64);
        let shared = Arc::new(Shared {
            out: Mutex::new((ring, live)),
            input,
            viewers: AtomicU32::new(0),
            on_viewers: Box::new(on_viewers),
        });
        let (from_guest, to_guest) = serial.into_split();
        let reader = tokio::spawn(read_guest(from_guest, shared.clone()));
        let writer = tokio::spawn(write_guest(to_guest, keys));
        Console {
            shared,
            tasks: Mutex::new(JoinSet::new()),
            pumps: [reader.abort_handle(), writer.abort_handle()],
        }
    }

    /// The last `max` bytes of the scrollback.
    pub fn scrollback(&self, max: u64) -> io::Result<Vec<u8>> {
        lock(&self.shared.out).0.tail(max)
    }

    pub fn capacity(&self) -> u64 {
        lock(&self.shared.out).0.capacity()
    }

    pub fn viewers(&self) -> u32 {
        self.shared.viewers.load(Ordering::Relaxed)
    }

    /// Serves `stream` as a viewer until either side closes it.
    pub fn view<S>(&self, stream: S, framing: Framing, options: ViewOptions)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (backlog, live) = {
            let out = lock(&self.shared.out);
            let live = out.1.subscribe();
            let at = out.0.total();
            let backlog = if options.replay {
                out.0.tail(u64::MAX).unwrap_or_else(|e| {
                    tracing::warn!("cannot read the console's scrollback: {e}");
                    Vec::new()
                })
            } else {
                Vec::new()
            };
            (backlog, Viewer { live, next: at })
        };
        let count = Count::new(self.shared.clone());
        let input = (!options.read_only).then(|| self.shared.input.clone());
        self.spawn(async move {
            let _count = count;
            let (from, to) = tokio::io::split(stream);
            tokio::select! {
                () = live.send_to(to, framing, backlog) => {}
                () = keys_from(from, framing, input) => {}
            }
        });
    }

    /// Runs `task` as long as the console lives.
    pub(crate) fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = lock(&self.tasks);
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }
}

/// The number of viewers, one while this lives.
struct Count(Arc<Shared>);

impl Count {
    fn new(shared: Arc<Shared>) -> Count {
        let n = shared.viewers.fetch_add(1, Ordering::Relaxed) + 1;
        (shared.on_viewers)(n);
        Count(shared)
    }
}

impl Drop for Count {
    fn drop(&mut self) {
        let n = self.0.viewers.fetch_sub(1, Ordering::Relaxed) - 1;
        (self.0.on_viewers)(n);
    }
}

async fn read_guest(mut serial: tokio::net::unix::OwnedReadHalf, shared: Arc<Shared>) {
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        let n = match serial.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("cannot read the guest's serial port: {e}");
                return;
            }
        };
        let data: Arc<[u8]> = Arc::from(&buf[..n]);
        let mut out = lock(&shared.out);
        let at = out.0.total();
        if let Err(e) = out.0.push(&data) {
            tracing::warn!("cannot keep the console's scrollback: {e}");
        }
        // No viewer is no error.
        let _ = out.1.send(Chunk { at, data });
    }
}

async fn write_guest(
    mut serial: tokio::net::unix::OwnedWriteHalf,
    mut keys: mpsc::Receiver<Vec<u8>>,
) {
    while let Some(bytes) = keys.recv().await {
        if let Err(e) = serial.write_all(&bytes).await {
            tracing::warn!("cannot write to the guest's serial port: {e}");
            return;
        }
    }
}

/// A viewer's place in the live output.
struct Viewer {
    live: broadcast::Receiver<Chunk>,
    /// Where the next byte it should get is in the console's whole output.
    next: u64,
}

impl Viewer {
    async fn send_to<W: AsyncWrite>(mut self, to: W, framing: Framing, backlog: Vec<u8>) {
        let mut to = std::pin::pin!(to);
        let mut framed = Vec::new();
        if framing == Framing::Telnet {
            framed.extend_from_slice(telnet::NEGOTIATION);
        }
        frame(framing, &backlog, &mut framed);
        drop(backlog);
        loop {
            if !framed.is_empty() && to.write_all(&framed).await.is_err() {
                return;
            }
            framed.clear();
            let chunk = match self.live.recv().await {
                Ok(chunk) => chunk,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if chunk.at > self.next {
                let lost = chunk.at - self.next;
                framed.extend_from_slice(
                    format!("\r\n[gns3-qemud: {lost} bytes of console output skipped: this viewer read too slowly]\r\n")
                        .as_bytes(),
                );
            }
            frame(framing, &chunk.data, &mut framed);
            self.next = chunk.at + chunk.data.len() as u64;
        }
    }
}

fn frame(framing: Framing, data: &[u8], out: &mut Vec<u8>) {
    match framing {
        Framing::Raw => out.extend_from_slice(data),
        Framing::Telnet => telnet::encode(data, out),
    }
}

/// Reads what a viewer types and, unless it is read-only, sends it to the guest. Returns
/// when the viewer closes its end.
async fn keys_from<R: AsyncRead>(from: R, framing: Framing, input: Option<mpsc::Sender<Vec<u8>>>) {
    let mut from = std::pin::pin!(from);
    let mut decoder = telnet::Decoder::new();
    let mut buf = vec![0u8; 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let Some(input) = &input else { continue };
        let bytes = match framing {
            Framing::Raw => buf[..n].to_vec(),
            Framing::Telnet => {
                let mut data = Vec::with_capacity(n);
                keys_of(&mut decoder, &buf[..n], &mut data);
                data
            }
        };
        if !bytes.is_empty() && input.send(bytes).await.is_err() {
            return;
        }
    }
}

/// The data bytes of telnet input. A break is dropped: the serial socket carries bytes only.
pub(crate) fn keys_of(decoder: &mut telnet::Decoder, mut input: &[u8], out: &mut Vec<u8>) {
    while !input.is_empty() {
        let (used, _break) = decoder.decode(input, out);
        input = &input[used..];
    }
}
