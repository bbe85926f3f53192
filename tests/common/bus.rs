//! A private system-type D-Bus daemon for integration tests, enforcing the project's own policy
//! file (dbus/org.gns3.Qemu.conf) the way the real system bus does.

// Every tests/*.rs binary compiles this module but not all of them use all of it.
#![allow(dead_code)]

use std::fs::{self, File, Permissions};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

const POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dbus/org.gns3.Qemu.conf");

pub struct Bus {
    /// The address to connect to, e.g. `unix:path=/tmp/gns3-qemud-bus.XXXX/bus,guid=...`.
    pub address: String,
    child: Child,
    // Holds the socket, config and log; removed after the daemon is gone (fields drop after
    // Drop::drop).
    dir: TempDir,
}

impl Bus {
    /// The dbus-daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `dbus-daemon` on a socket in a fresh temp dir and returns once it accepts
    /// connections, once the users its policy names exist. Panics (with the daemon's own
    /// error output) if it cannot be started.
    pub fn start() -> Bus {
        super::users::ensure();
        let dir = tempfile::Builder::new()
            .prefix("gns3-qemud-bus.")
            .tempdir()
            .expect("creating a temp dir for dbus-daemon");
        // Tests may connect as other users (to check the policy denies them), so they must be
        // able to reach the socket; dbus-daemon creates the socket itself world-connectable.
        fs::set_permissions(dir.path(), Permissions::from_mode(0o755))
            .expect("chmod of the dbus-daemon temp dir");
        let socket = dir.path().join("bus");
        let config = dir.path().join("bus.conf");
        fs::write(&config, config_xml(&socket)).expect("writing the dbus-daemon config");
        let log_path = dir.path().join("dbus-daemon.log");
        // A file rather than a pipe: nobody reads it while the daemon runs, and a full pipe
        // would block the daemon.
        let log = File::create(&log_path).expect("creating the dbus-daemon log");

        let mut child = Command::new("dbus-daemon")
            .arg("--nofork")
            .arg(format!("--config-file={}", config.display()))
            .arg("--print-address")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run dbus-daemon (is the dbus-daemon package installed?): {e}")
            });

        // dbus-daemon prints the address only once it is listening, so this line is the
        // readiness signal.
        let mut line = String::new();
        let stdout = child.stdout.take().expect("dbus-daemon stdout is piped");
        let read = BufReader::new(stdout).read_line(&mut line);
        let address = line.trim().to_owned();
        if read.is_err() || address.is_empty() {
            let _ = child.kill();
            let status = child.wait().expect("waiting for dbus-daemon");
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            panic!(
                "dbus-daemon did not print its address ({read:?}, {status}); config {}:\n{log}",
                config.display()
            );
        }

        Bus {
            address,
            child,
            dir,
        }
    }
}

impl Bus {
    /// `busctl` on this bus, as a user would type it: success, and what it printed.
    pub fn busctl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("busctl")
            .arg(format!("--address={}", self.address))
            .args(args)
            .output()
            .expect("running busctl (package systemd)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tests/private-bus.conf.in (shared with tests/demo.sh) with its blanks filled in.
fn config_xml(socket: &Path) -> String {
    let template = include_str!("../private-bus.conf.in");
    template
        .replace("@SOCKET@", &socket.display().to_string())
        .replace("@POLICY@", POLICY)
}
