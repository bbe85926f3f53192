//! Shell completion: clap_complete's engine, run by the binary itself when a shell asks
//! (`GNS3_QEMUCTL_COMPLETE=bash gns3-qemuctl -- WORDS…`), so every shell completes from the one clap
//! definition, and VM and lab names come from the daemon. The scripts shipped in
//! packaging/gns3-qemuctl/completions/ are only the shells' hooks that call the binary
//! ([`registration`]); `GNS3_QEMUCTL_COMPLETE=bash gns3-qemuctl` prints the same.
//!
//! Names are asked for with one GetManagedObjects on the system bus (DBUS_SYSTEM_BUS_ADDRESS
//! honoured; `--address` and `-H` on the line being completed are not seen by a candidate
//! function). Without a bus or a daemon, or past [`TIMEOUT`], there are no candidates and
//! nothing is printed: a shell's Tab must never print errors or hang.

use clap::CommandFactory;
use clap_complete::engine::CompletionCandidate;
use clap_complete::env::Shells;
use clap_complete::CompleteEnv;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::cli::Cli;
use crate::managed::Keep;
use crate::snapshot;

/// The program the shells' hooks run: found in PATH, as the shell found the command.
pub const PROGRAM: &str = "gns3-qemuctl";
/// The environment variable that turns the binary into its own completer.
/// Not clap's default COMPLETE, which a user's environment may set for something else: then
/// every command would print completions instead of running.
pub const VAR: &str = "GNS3_QEMUCTL_COMPLETE";
/// How long a Tab may wait for the daemon.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Completes and exits if a shell asked (VAR is set); else returns, and the command runs.
pub fn complete_if_asked() {
    env().complete();
}

fn env() -> CompleteEnv<'static, fn() -> clap::Command> {
    CompleteEnv::with_factory(Cli::command as fn() -> clap::Command)
        .var(VAR)
        .bin(PROGRAM)
        .completer(PROGRAM)
}

/// The hook of `shell` (bash, zsh or fish), as shipped for its completion directory.
pub fn registration(shell: &str) -> std::io::Result<String> {
    let shells = Shells::builtins();
    let completer = shells.completer(shell).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("clap_complete has no shell '{shell}'"),
        )
    })?;
    let mut out = Vec::new();
    completer.write_registration(VAR, PROGRAM, PROGRAM, PROGRAM, &mut out)?;
    String::from_utf8(out).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The VMs' names, each with its lab as the help zsh and fish show beside it. This is what
/// every argument that names a VM attaches: `#[arg(add = ArgValueCandidates::new(vm_names))]`.
pub fn vm_names() -> Vec<CompletionCandidate> {
    vm_names_of(&ask())
}

/// The labs' names (the VMs' Projects), for `--lab`:
/// `#[arg(add = ArgValueCandidates::new(lab_names))]`.
pub fn lab_names() -> Vec<CompletionCandidate> {
    lab_names_of(&ask())
}

/// Name → Project of each VM; empty on any failure.
fn ask() -> BTreeMap<String, String> {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return BTreeMap::new();
    };
    runtime.block_on(managed_vms()).unwrap_or_default()
}

async fn managed_vms() -> Option<BTreeMap<String, String>> {
    // The timeout bounds each call; the connection itself is a local socket or fails at once.
    let conn = zbus::connection::Builder::system()
        .method_timeout(TIMEOUT)
        .build()
        .await
        .ok()?;
    let vms = snapshot::vms_keeping(&conn, Keep::Only(&["Name", "Project"]))
        .await
        .ok()?;
    Some(
        vms.iter()
            .map(|vm| (vm.name(), vm.project()))
            .filter(|(name, _)| !name.is_empty())
            .collect(),
    )
}

fn vm_names_of(vms: &BTreeMap<String, String>) -> Vec<CompletionCandidate> {
    vms.iter()
        .map(|(name, project)| {
            let help = (!project.is_empty()).then(|| format!("lab {project}").into());
            CompletionCandidate::new(name).help(help)
        })
        .collect()
}

fn lab_names_of(vms: &BTreeMap<String, String>) -> Vec<CompletionCandidate> {
    let labs: BTreeSet<&String> = vms.values().filter(|p| !p.is_empty()).collect();
    labs.into_iter().map(CompletionCandidate::new).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(c: &[CompletionCandidate]) -> Vec<String> {
        c.iter()
            .map(|c| c.get_value().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn names_are_sorted_and_labs_given_once() {
        let vms: BTreeMap<String, String> = [("r2", "tri"), ("r1", "tri"), ("pc", "")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let names = vm_names_of(&vms);
        assert_eq!(values(&names), ["pc", "r1", "r2"]);
        assert_eq!(names[0].get_help(), None);
        assert_eq!(
            names[1].get_help().map(|h| h.to_string()).as_deref(),
            Some("lab tri")
        );
        assert_eq!(values(&lab_names_of(&vms)), ["tri"]);
    }

    #[test]
    fn no_bus_no_candidates_and_no_wait() {
        // SAFETY of the test: no other test of this crate reads the variable.
        std::env::set_var(
            "DBUS_SYSTEM_BUS_ADDRESS",
            "unix:path=/nonexistent/gns3-qemuctl-test",
        );
        let t = std::time::Instant::now();
        assert!(vm_names().is_empty());
        assert!(lab_names().is_empty());
        assert!(t.elapsed() < TIMEOUT, "{:?}", t.elapsed());
    }
}
