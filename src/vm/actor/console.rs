//! The VM's console, monitor and display while its QEMU runs: the TCP listeners bound at
//! Start (or again when a QEMU is adopted), the console attached to QEMU's serial socket,
//! and what clients ask of them (OpenConsole, ReadConsole, HumanMonitorCommand,
//! OpenGraphics).

use serde_json::json;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::Actor;
use crate::console::listener::{self, Who};
use crate::console::ring::Ring;
use crate::console::{monitor, Console, Framing, ViewOptions};
use crate::model::Display;
use crate::ports;
use crate::vm::error::{check_len, Error, Result};
use crate::vm::qemu::{Qemu, QMP_TIMEOUT};
use crate::vm::state::Op;
use crate::vm::{Command, ConsoleAccess};

/// The TCP listeners of a VM, bound before its QEMU starts.
#[derive(Default)]
pub(super) struct Listeners {
    console: Option<TcpListener>,
    monitor: Option<TcpListener>,
    vnc: Option<TcpListener>,
}

/// The longest monitor command taken.
const MAX_COMMAND: usize = 4096;

fn bind(key: &str, host: &str, port: u16) -> Result<TcpListener> {
    listener::bind(host, port).map_err(|e| {
        Error::Port(ports::Error::Unavailable {
            port,
            why: format!(
                "the daemon cannot listen on {host}:{port} for {key} ({e}); another program \
                 holds it: stop that program, or set {key} to another port"
            ),
        })
    })
}

impl Actor {
    /// Binds the VM's console and monitor ports, as its settings and the configuration say.
    pub(super) fn bind_listeners(&self) -> Result<Listeners> {
        let s = &self.record.settings;
        let console = match (s.console_port, self.ctx.console_access) {
            (0, _) | (_, ConsoleAccess::None) => None,
            (port, _) => Some(bind("ConsolePort", &self.ctx.console_host, port)?),
        };
        let monitor = match s.monitor_port {
            0 => None,
            port => Some(bind("MonitorPort", &self.ctx.monitor_host, port)?),
        };
        let vnc = match (s.display, s.vnc_port, self.ctx.console_access) {
            (Display::Headless, ..) | (_, 0, _) | (.., ConsoleAccess::None) => None,
            (Display::Vnc, port, _) => Some(bind("VncPort", &self.ctx.console_host, port)?),
        };
        Ok(Listeners {
            console,
            monitor,
            vnc,
        })
    }

    /// Attaches a console to QEMU's serial socket and serves the listeners through it.
    pub(super) async fn attach_console(&self, qemu: &mut Qemu, listeners: Listeners) -> Result<()> {
        let path = self.runtime.serial_socket();
        let serial = UnixStream::connect(&path).await.map_err(|e| {
            Error::Internal(format!(
                "cannot connect to the serial port of QEMU at {}: {e}",
                path.display()
            ))
        })?;
        let path = self.runtime.scrollback();
        let ring = Ring::open(&path, self.ctx.console_scrollback).map_err(|e| {
            Error::Internal(format!(
                "cannot open the console's scrollback {}: {e}",
                path.display()
            ))
        })?;
        let view = self.view.clone();
        let console = Arc::new(Console::attach(serial, ring, move |n| {
            view.send_if_modified(|v| std::mem::replace(&mut v.console_viewers, n) != n);
        }));
        let who = match self.ctx.console_access {
            ConsoleAccess::Members => Who::Drivers,
            ConsoleAccess::Any | ConsoleAccess::None => Who::Anyone,
        };
        if let Some(l) = listeners.console {
            let weak = Arc::downgrade(&console);
            console.spawn(listener::accept(l, who, "console", move |stream| {
                if let Some(c) = weak.upgrade() {
                    c.view(stream, Framing::Telnet, ViewOptions::default());
                }
            }));
        }
        if let Some(l) = listeners.monitor {
            let run = self.monitor_runner();
            let weak = Arc::downgrade(&console);
            console.spawn(listener::accept(
                l,
                Who::Drivers,
                "monitor",
                move |stream| {
                    if let Some(c) = weak.upgrade() {
                        c.spawn(monitor::session(stream, run.clone()));
                    }
                },
            ));
        }
        if let Some(l) = listeners.vnc {
            let commands = self.commands.clone();
            let weak = Arc::downgrade(&console);
            console.spawn(listener::accept(l, who, "display", move |stream| {
                let (Some(c), Ok(stream)) = (weak.upgrade(), stream.into_std()) else {
                    return;
                };
                let commands = commands.clone();
                c.spawn(async move {
                    let fd = OwnedFd::from(stream);
                    if let Err(why) = ask(&commands, |r| Command::GraphicsClient(fd, r)).await {
                        tracing::warn!("cannot hand a VNC client to QEMU: {why}");
                    }
                });
            }));
        }
        qemu.console = Some(console);
        Ok(())
    }

    /// The monitor port's way to the actor: each line becomes a HumanMonitorCommand, run in
    /// turn with the VM's other commands.
    fn monitor_runner(&self) -> monitor::Run {
        let commands = self.commands.clone();
        Arc::new(move |line| {
            let commands = commands.clone();
            Box::pin(async move { ask(&commands, |r| Command::HumanMonitorCommand(line, r)).await })
        })
    }

    /// A socket connected to the VM's VNC server.
    pub(super) async fn open_graphics(&mut self) -> Result<OwnedFd> {
        let io = |e: std::io::Error| Error::Internal(format!("cannot make a socket pair: {e}"));
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(io)?;
        self.graphics_client(ours.into()).await?;
        Ok(theirs.into())
    }

    /// Hands `client`, a connection of a VNC viewer, to QEMU's VNC server.
    pub(super) async fn graphics_client(&mut self, client: OwnedFd) -> Result<()> {
        self.admit(Op::Console)?;
        if self.record.settings.display != Display::Vnc {
            return Err(Error::InvalidState(format!(
                "VM '{}' has no display: set Display to vnc (while it is stopped) and start it",
                self.name()
            )));
        }
        let qemu = self.running()?;
        qemu.add_graphics_client(client).await
    }

    fn console(&self) -> Result<&Arc<Console>> {
        self.admit(Op::Console)?;
        self.qemu
            .as_ref()
            .and_then(|q| q.console.as_ref())
            .ok_or_else(|| {
                Error::InvalidState(format!(
                    "VM '{}' has no console: its QEMU was started by a gns3-qemud without \
                     one; restart the VM",
                    self.name()
                ))
            })
    }

    /// A socket connected to the console, raw.
    pub(super) fn open_console(&self, options: ViewOptions) -> Result<OwnedFd> {
        let console = self.console()?;
        let io = |e: std::io::Error| Error::Internal(format!("cannot make a socket pair: {e}"));
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(io)?;
        ours.set_nonblocking(true).map_err(io)?;
        console.view(
            UnixStream::from_std(ours).map_err(io)?,
            Framing::Raw,
            options,
        );
        Ok(theirs.into())
    }

    /// The last `max_bytes` of the scrollback; 0 for all of it.
    pub(super) fn read_console(&self, max_bytes: u32) -> Result<Vec<u8>> {
        let console = self.console()?;
        let capacity = console.capacity();
        if u64::from(max_bytes) > capacity {
            return Err(Error::InvalidArgument(format!(
                "max_bytes {max_bytes} is more than a console keeps ({capacity} bytes, \
                 console_scrollback in the daemon's configuration); 0 reads all of it"
            )));
        }
        let max = if max_bytes == 0 {
            capacity
        } else {
            max_bytes.into()
        };
        console
            .scrollback(max)
            .map_err(|e| Error::Internal(format!("cannot read the console's scrollback: {e}")))
    }

    /// One HMP command, through the daemon's own QMP connection.
    pub(super) async fn human_monitor_command(&mut self, command: String) -> Result<String> {
        let command = command.trim();
        if command.is_empty() || command.contains(['\n', '\r']) {
            return Err(Error::InvalidArgument(
                "the monitor command is empty or has several lines; give one command, such as 'info status'".into(),
            ));
        }
        check_len("the monitor command", command, MAX_COMMAND)?;
        self.admit(Op::Console)?;
        let qemu = self.running()?;
        let args = json!({ "command-line": command });
        let answer = qemu
            .qmp
            .execute("human-monitor-command", Some(args), QMP_TIMEOUT)
            .await?;
        Ok(answer.as_str().unwrap_or_default().to_string())
    }
}

/// Sends the actor a command from a task of its own listeners, and waits for the answer.
async fn ask<T>(
    commands: &mpsc::WeakSender<Command>,
    make: impl FnOnce(oneshot::Sender<Result<T>>) -> Command,
) -> std::result::Result<T, String> {
    let gone = || "the VM has been deleted".to_string();
    let tx = commands.upgrade().ok_or_else(gone)?;
    let (reply, answer) = oneshot::channel();
    tx.send(make(reply)).await.map_err(|_| gone())?;
    answer.await.map_err(|_| gone())?.map_err(|e| e.to_string())
}
