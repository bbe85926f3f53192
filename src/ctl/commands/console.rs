//! `console NAME [--no-replay] [--read-only]`: the socket of OpenConsole, copied to and from
//! stdin and stdout. On a terminal, as `machinectl login`: raw mode (given back on every way
//! out: detach, a closed console, an error, a signal, a panic), a line on stderr first, and
//! Ctrl-] (0x1d) detaches. Through pipes, for scripts: no raw mode, and the copy ends when
//! stdin ends (once the guest has been quiet for [`LINGER`], so the answer to what was sent
//! gets out) or the console closes.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{signal, SignalKind};
use zbus::Variant;

use nix::sys::termios::{self, SetArg, Termios};

use crate::cli::Console;
use crate::error::{Error, Result};

/// The byte that detaches: Ctrl-], as telnet's escape.
const DETACH: u8 = 0x1d;
/// After stdin's end, how long the guest may be quiet before the copy ends.
const LINGER: Duration = Duration::from_secs(1);

/// Where in `typed` a detach is: what comes before it is still sent.
pub fn detach_at(typed: &[u8]) -> Option<usize> {
    typed.iter().position(|&b| b == DETACH)
}

/// Why the copy ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Detached,
    /// The console closed: the VM stopped (or the daemon went away).
    Closed,
    InputEnded,
}

pub async fn run(conn: &zbus::Connection, c: Console) -> Result<()> {
    let vm = super::find(conn, &c.vm).await?;
    let options: HashMap<&str, Variant<'_>> = [
        ("Replay", Variant::from(!c.no_replay)),
        ("ReadOnly", Variant::from(c.read_only)),
    ]
    .into();
    let fd = match vm.open_console(options).await {
        Ok(fd) => OwnedFd::from(fd),
        Err(e) => {
            let what = format!("open the console of {}", c.vm);
            return Err(super::refused(&vm, &c.vm, &what, e).await);
        }
    };
    let socket = std::os::unix::net::UnixStream::from(fd);
    socket.set_nonblocking(true)?;
    let socket = tokio::net::UnixStream::from_std(socket)?;
    let mut input = Input::stdin()?;
    if !std::io::stdin().is_terminal() {
        copy(socket, &mut input, false).await?;
        return Ok(());
    }
    eprintln!(
        "Connected to the console of {}. Press Ctrl-] to detach.",
        c.vm
    );
    let raw = Raw::enter()?;
    let end = copy(socket, &mut input, true).await;
    drop(raw);
    if end? == End::Closed {
        let state = vm.state().await.unwrap_or_default();
        match state.as_str() {
            "running" | "paused" | "" => eprintln!("\nThe console of {} closed.", c.vm),
            _ => eprintln!("\nThe console of {} closed: the VM is {state}.", c.vm),
        }
    } else {
        eprintln!();
    }
    Ok(())
}

/// Copies the console to stdout and stdin to it until one of them ends.
async fn copy(socket: tokio::net::UnixStream, input: &mut Input, terminal: bool) -> Result<End> {
    let (mut from_guest, mut to_guest) = socket.into_split();
    let mut stdout = tokio::io::stdout();
    let mut signals = if terminal {
        Some([
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
            signal(SignalKind::interrupt())?,
        ])
    } else {
        None
    };
    let mut printed = vec![0u8; 16 * 1024];
    let mut typed = vec![0u8; 4096];
    let mut input_open = true;
    loop {
        let signalled = async {
            match &mut signals {
                Some([a, b, c]) => {
                    tokio::select! {
                        _ = a.recv() => (),
                        _ = b.recv() => (),
                        _ = c.recv() => (),
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            n = from_guest.read(&mut printed) => {
                let n = match n {
                    Ok(0) | Err(_) => return Ok(End::Closed),
                    Ok(n) => n,
                };
                stdout.write_all(&printed[..n]).await?;
                stdout.flush().await?;
            }
            n = input.read(&mut typed), if input_open => {
                let n = n?;
                if n == 0 {
                    if terminal {
                        return Ok(End::InputEnded);
                    }
                    // Not shut down: the daemon takes a viewer's end of writing as its
                    // leaving, and the answer to what was sent would be lost.
                    input_open = false;
                    continue;
                }
                let (send, detach) = match detach_at(&typed[..n]) {
                    Some(i) if terminal => (&typed[..i], true),
                    _ => (&typed[..n], false),
                };
                if to_guest.write_all(send).await.is_err() {
                    return Ok(End::Closed);
                }
                if detach {
                    return Ok(End::Detached);
                }
            }
            _ = tokio::time::sleep(LINGER), if !input_open => return Ok(End::InputEnded),
            _ = signalled => return Ok(End::Detached),
        }
    }
}

/// Stdin, read without blocking the runtime: a terminal or pipe is read once poll(2) says it
/// has bytes, so it stays a blocking descriptor (the shell shares a terminal's, and stdout is
/// often the same one); a file, which epoll does not take, through tokio's own stdin.
enum Input {
    Polled(AsyncFd<OwnedFd>),
    File(tokio::io::Stdin),
}

impl Input {
    fn stdin() -> Result<Input> {
        let fd = std::io::stdin().as_fd().try_clone_to_owned()?;
        // SAFETY: the descriptor is a copy of stdin's that only this AsyncFd holds: nothing
        // else closes or replaces it while it is registered.
        let registered =
            unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
        match registered {
            Ok(fd) => Ok(Input::Polled(fd)),
            Err(e) => match e.into_parts() {
                (_, e) if e.raw_os_error() == Some(nix::errno::Errno::EPERM as i32) => {
                    Ok(Input::File(tokio::io::stdin()))
                }
                (_, e) => Err(Error::Output(e)),
            },
        }
    }

    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Input::File(stdin) => read_some(stdin, buf).await,
            Input::Polled(fd) => loop {
                let mut ready = fd.readable().await?;
                let mut polled = [nix::poll::PollFd::new(
                    fd.get_ref().as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let has_bytes = nix::poll::poll(&mut polled, nix::poll::PollTimeout::ZERO)
                    .map_err(std::io::Error::from)?
                    > 0;
                if !has_bytes {
                    ready.clear_ready();
                    continue;
                }
                return nix::unistd::read(fd.get_ref().as_raw_fd(), buf)
                    .map_err(std::io::Error::from);
            },
        }
    }
}

async fn read_some(
    reader: &mut (impl AsyncRead + Unpin),
    buf: &mut [u8],
) -> std::io::Result<usize> {
    reader.read(buf).await
}

/// The terminal's settings before raw mode, for the panic hook to put back too.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

/// Raw mode on the terminal of stdin, until dropped.
struct Raw;

impl Raw {
    fn enter() -> Result<Raw> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).map_err(std::io::Error::from)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        if let Ok(mut s) = SAVED.lock() {
            *s = Some(saved);
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        // TCSADRAIN, not TCSAFLUSH: what was typed since the banner goes to the console
        // rather than away (a flush lost a line typed at once, as a test typed it).
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSADRAIN, &raw).map_err(std::io::Error::from)?;
        Ok(Raw)
    }
}

fn restore() {
    let saved = SAVED.lock().ok().and_then(|mut s| s.take());
    if let Some(saved) = saved {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, &saved);
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        restore();
    }
}

#[cfg(test)]
mod tests {
    use super::detach_at;

    #[test]
    fn ctrl_right_bracket_detaches() {
        assert_eq!(detach_at(b"ls\r"), None);
        assert_eq!(detach_at(b"\x1d"), Some(0));
        assert_eq!(detach_at(b"ls\x1d\r"), Some(2));
        assert_eq!(detach_at(b"a\x1db\x1d"), Some(1));
        assert_eq!(detach_at(b""), None);
        // Ctrl-C, Ctrl-D and telnet's IAC go to the guest.
        assert_eq!(detach_at(b"\x03\x04\xff"), None);
    }
}
