//! Every user and group the tests need, made in one place: `Bus::start` calls `ensure`
//! before it starts a bus, because dbus-daemon resolves the user and group names of its
//! policy when it loads it and skips a rule that names someone who does not exist yet.
//!
//! The daemon's user and the group `gns3` come from the package's own sysusers file, so the
//! tests run with the accounts an installed system has; the two policy-test users are the
//! tests' own.

use std::process::Command;
use std::sync::Once;

const SYSUSERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/gns3-qemud.sysusers");

/// A member of `gns3`, and a user in no group of ours (tests/policy.rs).
pub const MEMBER: &str = "gns3-test-member";
pub const OUTSIDER: &str = "gns3-test-outsider";

/// sysusers.d lines, one an argument of `systemd-sysusers --inline`.
const TEST_USERS: [&str; 3] = [
    "u gns3-test-member - \"gns3-qemud tests, a member of gns3\" / /usr/sbin/nologin",
    "m gns3-test-member gns3",
    "u gns3-test-outsider - \"gns3-qemud tests, an outsider\" / /usr/sbin/nologin",
];

/// Makes the accounts once per test process, as root. A test that is not root cannot, and
/// needs none: the tests that run the daemon as its own user need root anyway.
pub fn ensure() {
    static MADE: Once = Once::new();
    MADE.call_once(|| {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        run(Command::new("systemd-sysusers").arg(SYSUSERS));
        run(Command::new("systemd-sysusers")
            .arg("--inline")
            .args(TEST_USERS));
        for user in ["gns3-qemud", MEMBER, OUTSIDER] {
            assert!(
                nix::unistd::User::from_name(user).ok().flatten().is_some(),
                "systemd-sysusers did not create user {user}"
            );
        }
    });
}

fn run(command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run systemd-sysusers (package systemd): {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A command that runs as `user`, with the groups the user database gives it (setpriv, of
/// util-linux), and `/` as its home.
pub fn run_as(user: &str, program: &str) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args([
            &format!("--reuid={user}"),
            &format!("--regid={user}"),
            "--init-groups",
            program,
        ])
        .env("HOME", "/");
    command
}

/// `gdbus call` as `user` (with the groups the user database gives it): success, and what
/// it printed.
pub fn gdbus_as(
    user: &str,
    bus: &super::Bus,
    path: &str,
    method: &str,
    args: &[&str],
) -> (bool, String) {
    let out = run_as(user, "gdbus")
        .args([
            "call",
            "--address",
            &bus.address,
            "--dest",
            "org.gns3.Qemu",
            "--object-path",
            path,
            "--method",
            method,
        ])
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}
