//! The floors' QEMUs: the test guest started by hand, as a user would without the daemon,
//! its serial console on QEMU's own telnet server; and the daemon's own command line for a
//! VM run by hand, driven over QMP as the daemon drives it.

use crate::common::{self, Console, VmProxy};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A QEMU started by hand, killed when dropped.
pub struct Qemu {
    child: Child,
    console_port: u16,
    log: PathBuf,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Qemu {
    /// Boots the test guest (128 MiB, TCG, no default devices) with `extra` arguments; its
    /// output goes to `log`.
    pub fn start(guest: &Path, log: &Path, extra: &[String]) -> Qemu {
        let console_port = common::free_port();
        let file = std::fs::File::create(log).expect("creating a QEMU log file");
        let child = Command::new("qemu-system-x86_64")
            .args([
                "-m",
                "128",
                "-accel",
                "tcg",
                "-display",
                "none",
                "-nodefaults",
            ])
            .arg("-kernel")
            .arg(guest.join("vmlinuz"))
            .arg("-initrd")
            .arg(guest.join("initrd.gz"))
            .args(["-append", "console=ttyS0 panic=-1 quiet"])
            .arg("-serial")
            .arg(format!(
                "telnet:127.0.0.1:{console_port},server=on,wait=off"
            ))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("cloning the QEMU log file"))
            .stderr(file)
            .spawn()
            .expect("running qemu-system-x86_64");
        Qemu {
            child,
            console_port,
            log: log.to_path_buf(),
        }
    }

    /// Connects to its console once it listens, or panics with QEMU's own words if it
    /// exited instead (a port taken meanwhile, a bad argument).
    pub fn console(&mut self) -> Console {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for QEMU") {
                let out = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("hand-started QEMU exited ({status}):\n{out}");
            }
            // A probe connection: QEMU listens again once it is closed, and the guest prints
            // nothing this early, so no output is lost.
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.console_port)).is_ok() {
                return Console::connect(self.console_port);
            }
            assert!(
                Instant::now() < end,
                "hand-started QEMU does not listen on its console port"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The command line the daemon runs for `vm`, with its pid file moved to `work`. The VM is
/// started and stopped once so that its own disks (and UEFI VARS) exist; it is kept, so its
/// console port stays reserved for it, free for the floor's QEMU to bind.
pub async fn command_of(vm: &VmProxy<'static>, work: &Path) -> Vec<String> {
    vm.start().await.expect("Start");
    vm.stop().await.expect("Stop");
    let mut cmd = vm.command_line().await.expect("CommandLine");
    let i = cmd
        .iter()
        .position(|a| a == "-pidfile")
        .expect("-pidfile in the command line");
    cmd[i + 1] = work.join("qemu.pid").to_string_lossy().into_owned();
    cmd
}

/// The daemon's command line run by hand: the time from spawn to the guest running (QMP's
/// greeting, its capabilities negotiation, `cont`: what the daemon's Start ends with), and
/// from `quit` to its exit. A guest never continued would make a cheaper quit than the
/// daemon's Stop of a running one.
pub fn up_and_quit(cmd: &[String], work: &Path) -> (Duration, Duration) {
    let t = Instant::now();
    let mut qemu = ByHand::spawn(cmd, work);
    qemu.execute("cont");
    let up = t.elapsed();
    let t = Instant::now();
    qemu.quit();
    (up, t.elapsed())
}

/// The daemon's command line run by hand, QMP on fd 3 and the serial port's socket on fd 4
/// as the daemon gives them, past its QMP greeting and capabilities negotiation. Its CPUs
/// wait (`-S`, as the daemon starts every QEMU) until `cont`.
pub struct ByHand {
    child: Child,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    work: PathBuf,
}

impl ByHand {
    pub fn spawn(cmd: &[String], work: &Path) -> ByHand {
        let socket = work.join("qmp.sock");
        let _ = std::fs::remove_file(&socket);
        let log = std::fs::File::create(work.join("qemu.log")).expect("creating the floor's log");
        let listener = UnixListener::bind(&socket).expect("binding the floor's QMP socket");
        let serial_socket = work.join("serial.sock");
        let _ = std::fs::remove_file(&serial_socket);
        let serial = UnixListener::bind(&serial_socket).expect("binding the floor's serial socket");
        // Above 4, so that neither dup2 below overwrites the other's source.
        let parked = |fd: i32| {
            // SAFETY: F_DUPFD_CLOEXEC only makes a new descriptor, closed at exec.
            let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
            assert!(
                new >= 10,
                "fcntl F_DUPFD: {}",
                std::io::Error::last_os_error()
            );
            new
        };
        let fds = [parked(listener.as_raw_fd()), parked(serial.as_raw_fd())];
        let mut command = Command::new(&cmd[0]);
        command
            .args(&cmd[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the floor's log"))
            .stderr(log);
        // SAFETY: dup2 is async-signal-safe; it puts the listeners on fds 3 and 4 of the
        // child, open across exec.
        unsafe {
            command.pre_exec(move || {
                for (n, fd) in fds.iter().enumerate() {
                    if libc::dup2(*fd, 3 + n as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("running the floor's QEMU");
        for fd in fds {
            // SAFETY: the parked copies are ours alone.
            unsafe { libc::close(fd) };
        }
        drop((listener, serial));
        let stream = UnixStream::connect(&socket).expect("connecting to the floor's QMP");
        let mut qemu = ByHand {
            child,
            reader: BufReader::new(stream.try_clone().expect("cloning the QMP stream")),
            writer: stream,
            work: work.to_path_buf(),
        };
        qemu.expect("\"QMP\"");
        qemu.execute("qmp_capabilities");
        qemu
    }

    /// The next line of QMP that is not an event (`quit` sends SHUTDOWN before its
    /// return), which must contain `what`.
    fn expect(&mut self, what: &str) {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.reader.read_line(&mut line).expect("reading QMP");
            assert!(n > 0, "QMP closed before {what}");
            if !line.contains("\"event\"") {
                assert!(line.contains(what), "QMP said {line:?}, not {what}");
                return;
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs a QMP command without arguments, until its return.
    pub fn execute(&mut self, command: &str) {
        writeln!(self.writer, "{{\"execute\":\"{command}\"}}").expect("writing to QMP");
        self.expect("\"return\"");
    }

    /// `quit`, and its exit, which must be a success.
    pub fn quit(mut self) {
        self.execute("quit");
        let status = self.child.wait().expect("waiting for the floor's QEMU");
        assert!(
            status.success(),
            "the floor's QEMU exited with {status}:\n{}",
            std::fs::read_to_string(self.work.join("qemu.log")).unwrap_or_default()
        );
    }
}
