//! Running the built gns3-qemuctl as a user would, and what it printed and how it ended.

use std::process::Command;
use std::time::Duration;

use super::{ctl_bin, guest, Console, Lab};

/// How long the test guest may take to boot under TCG.
pub const BOOT: Duration = Duration::from_secs(120);

/// What a run printed and how it ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn finish(mut command: Command) -> Run {
    let out = command.output().unwrap();
    Run {
        code: out
            .status
            .code()
            .expect("gns3-qemuctl was killed by a signal"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// `gns3-qemuctl args` on the bus at `address`, found as the system bus is, through
/// DBUS_SYSTEM_BUS_ADDRESS.
pub fn ctl_on(address: &str, args: &[&str]) -> Run {
    let mut command = Command::new(ctl_bin());
    command.args(args).env("DBUS_SYSTEM_BUS_ADDRESS", address);
    finish(command)
}

pub fn ctl(lab: &Lab, args: &[&str]) -> Run {
    ctl_on(&lab.bus.address, args)
}

pub fn ok(stdout: &str) -> Run {
    Run {
        code: 0,
        stdout: stdout.into(),
        stderr: String::new(),
    }
}

pub fn failed(code: i32, stderr: &str) -> Run {
    Run {
        code,
        stdout: String::new(),
        stderr: stderr.into(),
    }
}

/// `create` of the test guest with `extra` options.
pub fn create(lab: &Lab, name: &str, extra: &[&str]) -> Run {
    let g = guest();
    let (kernel, initrd) = (g.join("vmlinuz"), g.join("initrd.gz"));
    let mut args = vec!["create", name, "--kernel", kernel.to_str().unwrap()];
    args.extend(["--initrd", initrd.to_str().unwrap()]);
    args.extend(["--append", "console=ttyS0 panic=-1 quiet"]);
    args.extend(extra);
    ctl(lab, &args)
}
