//! `capture VM:ethN [-w FILE]`: the adapter's capture as a live pcap stream (OpenCapture),
//! copied to stdout (for `wireshark -k -i -`) or to FILE until the capture ends, the reader
//! goes, or Ctrl-C. It starts a capture unless one runs on the adapter, and then stops the
//! capture it started: one that ran before goes on.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::OwnedFd;
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, SignalKind};

use crate::error::{Error, Result};
use crate::links::Port;

pub async fn run(conn: &zbus::Connection, end: &str, file: Option<&str>) -> Result<()> {
    let port = Port::parse(end).map_err(Error::Endpoint)?;
    let vm = super::find(conn, &port.vm).await?;
    let what = format!("capture {port}");
    let running = vm
        .captures()
        .await
        .map_err(Error::call(what.clone()))?
        .iter()
        .any(|(a, _)| *a == port.adapter);
    // Written as it comes, blocking: a file or a pipe, and nothing else to do meanwhile.
    let mut out: Box<dyn Write> = match file {
        Some(f) => Box::new(std::fs::File::create(f).map_err(|source| Error::WriteFile {
            file: f.to_string(),
            source,
        })?),
        None => Box::new(std::io::stdout().lock()),
    };
    if !running {
        if let Err(e) = vm.start_capture(port.adapter, HashMap::new()).await {
            return Err(super::refused(&vm, &port.vm, &what, e).await);
        }
    }
    let copied = match vm.open_capture(port.adapter).await {
        Ok(fd) => copy(OwnedFd::from(fd), &mut out).await,
        Err(e) => Err(super::refused(&vm, &port.vm, &what, e).await),
    };
    if !running {
        // A capture the VM's end has ended already is no error.
        if let Err(e) = vm.stop_capture(port.adapter).await {
            if copied.is_ok()
                && vm
                    .state()
                    .await
                    .is_ok_and(|s| s == "running" || s == "paused")
            {
                return Err(Error::call(format!("stop the capture of {port}"))(e));
            }
        }
    }
    copied
}

/// Copies the stream to `out` until it ends, `out` is closed (EPIPE), or SIGINT/SIGTERM.
async fn copy(fd: OwnedFd, out: &mut dyn Write) -> Result<()> {
    let socket = std::os::unix::net::UnixStream::from(fd);
    socket.set_nonblocking(true)?;
    let mut socket = tokio::net::UnixStream::from_std(socket)?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = tokio::select! {
            n = socket.read(&mut buf) => n?,
            _ = int.recv() => 0,
            _ = term.recv() => 0,
        };
        if n == 0 {
            break;
        }
        // Each piece at once: a viewer at the other end of a pipe shows frames as they pass.
        match out.write_all(&buf[..n]).and_then(|()| out.flush()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            other => other?,
        }
    }
    Ok(())
}
