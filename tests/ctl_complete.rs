//! gns3-qemuctl's shell completion as bash runs it: the shipped hook
//! (packaging/gns3-qemuctl/completions/gns3-qemuctl.bash) sourced, its function called as
//! bash calls it on a Tab, running the built binary from PATH, which asks the real daemon on
//! a private bus for the VMs' names.

mod common;

use common::ctl::create;
use common::{ctl_bin, Lab};
use std::process::Command;

const HOOK: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/packaging/gns3-qemuctl/completions/gns3-qemuctl.bash"
);

/// What bash offers for `words` (the last one being completed, "" for a bare Tab), as
/// COMPREPLY after the hook's function ran, one a line; and what was printed on stderr.
fn complete(bus: &str, words: &[&str]) -> (Vec<String>, String) {
    let dir = ctl_bin().parent().unwrap();
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    // bash calls the function with the command, the word being completed and the one before.
    let script = r#"
        source "$1"; shift
        COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_TYPE=9
        _clap_complete_gns3_qemuctl "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", script, "-", HOOK])
        .args(words)
        .env("PATH", path)
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let offered = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    (offered, String::from_utf8(out.stderr).unwrap())
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// What clap's engine offers on a bare Tab after `start`, beside any names: the options.
const NO_NAME: [&str; 7] = [
    "--lab",
    "--address",
    "--all",
    "--host",
    "--no-legend",
    "--no-pager",
    "--help",
];

#[tokio::test]
async fn bash_completes_vm_names_from_the_daemon() {
    let lab = Lab::start().await;
    let bus = lab.bus.address.as_str();
    // Nothing yet: no VM to offer.
    let none = (names(&NO_NAME), String::new());
    assert_eq!(complete(bus, &["gns3-qemuctl", "start", ""]), none);
    for name in ["r1", "r2"] {
        assert_eq!(create(&lab, name, &[]).code, 0, "create {name}");
    }
    // On a bare Tab, clap's engine offers the names, then the options (it adds them whenever
    // the word is empty); once the word is begun, only what matches it.
    let with_options = [&["r1", "r2"][..], &NO_NAME].concat();
    assert_eq!(
        complete(bus, &["gns3-qemuctl", "start", ""]),
        (names(&with_options), String::new())
    );
    let both = (names(&["r1", "r2"]), String::new());
    assert_eq!(complete(bus, &["gns3-qemuctl", "start", "r"]), both);
    assert_eq!(
        complete(bus, &["gns3-qemuctl", "start", "r2"]),
        (names(&["r2"]), String::new())
    );
    // Every argument that names a VM, wherever it is on the line.
    assert_eq!(complete(bus, &["gns3-qemuctl", "stop", "r1", "r"]), both);
    assert_eq!(complete(bus, &["gns3-qemuctl", "show", "r"]), both);
    assert_eq!(
        complete(
            bus,
            &["gns3-qemuctl", "--no-legend", "delete", "--force", "r"]
        ),
        both
    );
    assert_eq!(complete(bus, &["gns3-qemuctl", "set", "r"]), both);
    assert_eq!(complete(bus, &["gns3-qemuctl", "log", "r"]), both);
    // Labs, by their VMs' Project; and the commands added with the lab ones.
    assert_eq!(create(&lab, "x1", &["--set", "Project=lab1"]).code, 0);
    let lab1 = (names(&["lab1"]), String::new());
    assert_eq!(complete(bus, &["gns3-qemuctl", "stop", "--lab", ""]), lab1);
    assert_eq!(complete(bus, &["gns3-qemuctl", "down", "--lab", "l"]), lab1);
    let x1 = (names(&["x1"]), String::new());
    for command in ["console", "get", "wait", "watch"] {
        assert_eq!(
            complete(bus, &["gns3-qemuctl", command, "x"]),
            x1,
            "{command}"
        );
    }
    // The commands come from the same clap definition.
    assert_eq!(
        complete(bus, &["gns3-qemuctl", "st"]),
        (names(&["start", "stop"]), String::new())
    );
    // create takes a new name: no VM's offered.
    let (offered, stderr) = complete(bus, &["gns3-qemuctl", "create", ""]);
    assert_eq!(stderr, "");
    assert!(offered.contains(&"--ram".to_string()), "{offered:?}");
    assert!(!offered.iter().any(|o| o.starts_with('r')), "{offered:?}");

    // No daemon on the bus, or no bus at all: no name offered, nothing printed.
    drop(lab.daemon);
    assert_eq!(complete(bus, &["gns3-qemuctl", "start", ""]), none);
    assert_eq!(
        complete(
            "unix:path=/nonexistent/gns3-qemuctl",
            &["gns3-qemuctl", "start", ""]
        ),
        none
    );
}

/// The binary prints the hooks that are shipped (zsh's has a line more, for fpath).
#[test]
fn the_binary_prints_the_shipped_hooks() {
    for (shell, file) in [
        ("bash", "gns3-qemuctl.bash"),
        ("fish", "gns3-qemuctl.fish"),
        ("zsh", "_gns3-qemuctl"),
    ] {
        let out = Command::new(ctl_bin())
            .env(gns3_qemuctl::complete::VAR, shell)
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let printed = String::from_utf8(out.stdout).unwrap();
        let path = format!(
            "{}/packaging/gns3-qemuctl/completions/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let shipped = std::fs::read_to_string(path).unwrap();
        let extra = shipped
            .strip_prefix(&printed)
            .unwrap_or_else(|| panic!("{shell}: printed\n{printed}\nshipped\n{shipped}"));
        let want = if shell == "zsh" {
            "[[ ${funcstack[1]} = _gns3-qemuctl ]] && _clap_dynamic_completer_gns3_qemuctl \"$@\"\n"
        } else {
            ""
        };
        assert_eq!(extra, want, "{shell}");
    }
}
