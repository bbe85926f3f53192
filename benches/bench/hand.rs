//! The floors' QEMUs: the test guest started by hand, as a user would without the daemon,
//! its serial console on QEMU's own telnet server.

use crate::common::{self, Console};
use std::net::{Ipv4Addr, TcpStream};
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
