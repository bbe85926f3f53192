//! A client for a guest's serial console: the daemon's telnet server on ConsolePort, or a
//! socket from OpenConsole (raw bytes; the telnet parser finds no command in a guest's text).
//!
//! A new viewer gets the scrollback first: wait for markers only the shell computes (`run`),
//! or that appear once.

// Every tests/*.rs binary compiles this module but not all of them use all of it.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const IAC: u8 = 0xFF;
const SB: u8 = 0xFA;
const SE: u8 = 0xF0;

/// How much of the unread output a timeout error shows.
const TAIL: usize = 2000;

// Process-wide so that two Consoles on the same guest never wait for each other's markers.
static NEXT_MARKER: AtomicU64 = AtomicU64::new(1);

#[derive(Clone, Copy)]
enum Telnet {
    Data,
    Iac,
    Option,
    Sub,
    SubIac,
}

/// The viewer's end: telnet over TCP, or a socket handed over D-Bus.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// A GNS3 controller's web console (tests/common/gns3.rs).
    Ws(Box<super::gns3::WsStream>),
}

impl Stream {
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Ws(s) => s.set_read_timeout(t),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Ws(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Ws(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct Console {
    stream: Stream,
    /// Console output, telnet commands removed, not yet consumed by `wait_for`.
    buf: Vec<u8>,
    /// Telnet parser state, kept because a command can straddle two reads.
    telnet: Telnet,
}

impl Console {
    /// Makes the guest ignore the power button: the background subshell of /init that waits on
    /// the button's evdev (tests/guest/build.sh) is killed before its `dd` (the subshell forks
    /// it, maybe after GUEST-READY: it is waited for), so that nothing is left to print
    /// GUEST-POWERDOWN and power off. A killed `dd` may linger as a zombie until /init reaps
    /// it: only a live one is a watcher.
    pub fn ignore_the_power_button(&mut self) {
        let out = self
            .run(
                "until pidof dd >/dev/null; do sleep 1; done; \
                 for p in $(pidof dd); do kill -9 $(cut -d' ' -f4 /proc/$p/stat) && kill -9 $p; done; \
                 sleep 1; for p in $(pidof dd); do \
                 grep -q '^[0-9]* (dd) [ZX]' /proc/$p/stat 2>/dev/null || echo LIVE-WATCHER; done; \
                 echo WATCHERS-CHECKED",
                Duration::from_secs(30),
            )
            .unwrap();
        assert!(
            out.contains("WATCHERS-CHECKED") && !out.contains("LIVE-WATCHER"),
            "{out}"
        );
    }

    /// Connects to QEMU's telnet serial port on 127.0.0.1, retrying for up to 10 s while QEMU
    /// is still starting. Panics if it never accepts.
    pub fn connect(port: u16) -> Console {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut backoff = Duration::from_millis(10);
        let stream = loop {
            match TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
                Ok(stream) => break stream,
                Err(e) if Instant::now() >= deadline => {
                    panic!("cannot connect to the serial console on 127.0.0.1:{port}: {e}")
                }
                Err(_) => {
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
            }
        };
        stream
            .set_nodelay(true)
            .expect("TCP_NODELAY on the console");
        Console::over(Stream::Tcp(stream))
    }

    /// A viewer on a socket from OpenConsole.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Console {
        Console::over(Stream::Unix(UnixStream::from(fd)))
    }

    /// A viewer on any stream (a web console's, tests/common/gns3.rs).
    pub fn over_stream(stream: Stream) -> Console {
        Console::over(stream)
    }

    fn over(stream: Stream) -> Console {
        Console {
            stream,
            buf: Vec::new(),
            telnet: Telnet::Data,
        }
    }

    /// Waits until the other end closes the connection; what it sent before.
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(self.failure("the console stayed open"));
            }
            match self.read_some(deadline - now) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        Ok(String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned())
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|e| panic!("writing to the console: {e}"));
    }

    /// Writes raw bytes, where the other end may be gone (a daemon killed meanwhile).
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads until `needle` appears and returns everything up to and including it; the next
    /// call searches only what follows. On timeout or EOF, returns an error with the tail of
    /// the unread output, which stays unread.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let needle = needle.as_bytes();
        let mut from = 0;
        loop {
            if let Some(pos) = find(&self.buf[from..], needle) {
                let end = from + pos + needle.len();
                let text: Vec<u8> = self.buf.drain(..end).collect();
                return Ok(String::from_utf8_lossy(&text).into_owned());
            }
            // Only the last needle.len()-1 bytes can start a match that more input completes.
            from = self
                .buf
                .len()
                .saturating_sub(needle.len().saturating_sub(1));

            let now = Instant::now();
            if now >= deadline {
                return Err(self.failure(&format!(
                    "timed out after {timeout:?} waiting for {:?}",
                    String::from_utf8_lossy(needle)
                )));
            }
            match self.read_some(deadline - now) {
                Ok(0) => {
                    return Err(self.failure(&format!(
                        "console closed while waiting for {:?}",
                        String::from_utf8_lossy(needle)
                    )))
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(self.failure(&format!("reading the console: {e}"))),
            }
        }
    }

    /// Types `line` and Enter.
    pub fn send_line(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .unwrap_or_else(|e| panic!("writing {line:?} to the console: {e}"));
    }

    /// Runs `cmd` in the guest's shell and returns its output (stdout and stderr, with `\n`
    /// line ends). `cmd` is typed as `...; cmd; ...` on one line, so it must not end in `&`
    /// (write `(cmd &)`) and must not read stdin.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let n = NEXT_MARKER.fetch_add(1, Ordering::Relaxed);
        // The shell computes the marker numbers, so the echo of the typed line never matches;
        // the begin marker skips that echo and the prompt.
        self.send_line(&format!(
            "echo __BEGIN_$((1+{n}))__; {cmd}; echo __DONE_$((1+{n}))__"
        ));
        let begin = format!("__BEGIN_{}__", n + 1);
        let done = format!("__DONE_{}__", n + 1);
        self.wait_for(&begin, timeout)?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let out = self.wait_for(&done, remaining)?;
        let out = out[..out.len() - done.len()].replace("\r\n", "\n");
        Ok(out.strip_prefix('\n').unwrap_or(&out).to_owned())
    }

    /// Waits for the test guest to boot (2 min at most) and gives eth0 address `ip`/24;
    /// returns eth0's MAC, as the guest printed it. The console must be connected before the
    /// guest prints: QEMU drops serial output nobody reads.
    pub fn addressed(&mut self, ip: &str) -> String {
        let (boot, shell) = (Duration::from_secs(120), Duration::from_secs(30));
        self.wait_for("GUEST-READY", boot).unwrap();
        self.wait_for("GUEST-NET eth0 ", boot).unwrap();
        let mac = self.wait_for("\n", shell).unwrap().trim().to_string();
        self.run(&format!("ip addr add {ip}/24 dev eth0"), shell)
            .unwrap();
        mac
    }

    /// Whether the guest gets an answer from `ip` (three pings, a second each).
    pub fn reaches(&mut self, ip: &str) -> bool {
        let out = self
            .run(
                &format!("ping -c 3 -W 1 {ip} >/dev/null 2>&1 && echo REACH-YES || echo REACH-NO"),
                Duration::from_secs(30),
            )
            .unwrap();
        assert!(out.contains("REACH-"), "{out}");
        out.contains("REACH-YES")
    }

    /// Pings until `ip` answers: the first pings after a change may go to ARP.
    pub fn comes_to_reach(&mut self, ip: &str) -> bool {
        (0..5).any(|_| self.reaches(ip))
    }

    /// The carrier of `iface` as the guest's kernel sees it ("1" or "0"), once it is `want`
    /// (the NIC's interrupt takes a moment) or after 10 s.
    pub fn carrier(&mut self, iface: &str, want: &str) -> String {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self
                .run(
                    &format!("cat /sys/class/net/{iface}/carrier"),
                    Duration::from_secs(30),
                )
                .unwrap();
            let now = out.trim().to_string();
            if now == want || Instant::now() > end {
                return now;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `cmd` in the guest until it prints `want` (its output, less the last line end),
    /// within `timeout`: what a device or a change shows appears a moment after it.
    pub fn run_until(&mut self, cmd: &str, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.run(cmd, timeout).unwrap();
            if out.trim_end() == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{cmd}\nprinted {out:?}, not {want:?}"
            );
        }
    }

    fn read_some(&mut self, timeout: Duration) -> std::io::Result<usize> {
        // A zero timeout would mean "block forever" to set_read_timeout.
        let timeout = timeout.max(Duration::from_millis(1));
        self.stream.set_read_timeout(Some(timeout))?;
        let mut chunk = [0u8; 4096];
        let len = self.stream.read(&mut chunk)?;
        for &b in &chunk[..len] {
            self.telnet = match (self.telnet, b) {
                (Telnet::Data, IAC) => Telnet::Iac,
                (Telnet::Data, b) => {
                    self.buf.push(b);
                    Telnet::Data
                }
                // An escaped 0xFF data byte.
                (Telnet::Iac, IAC) => {
                    self.buf.push(IAC);
                    Telnet::Data
                }
                // WILL, WONT, DO, DONT take an option byte.
                (Telnet::Iac, 0xFB..=0xFE) => Telnet::Option,
                (Telnet::Iac, SB) => Telnet::Sub,
                // Any other command is two bytes.
                (Telnet::Iac, _) => Telnet::Data,
                (Telnet::Option, _) => Telnet::Data,
                (Telnet::Sub, IAC) => Telnet::SubIac,
                (Telnet::Sub, _) => Telnet::Sub,
                (Telnet::SubIac, SE) => Telnet::Data,
                (Telnet::SubIac, _) => Telnet::Sub,
            };
        }
        Ok(len)
    }

    fn failure(&self, what: &str) -> String {
        let tail = &self.buf[self.buf.len().saturating_sub(TAIL)..];
        format!(
            "{what}; unread console output (last {} bytes):\n{}",
            tail.len(),
            String::from_utf8_lossy(tail)
        )
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}
