//! `start`, `poweroff`, `suspend`, `resume`, `reload`, `reset-disks`, `discard-state` of
//! several VMs at once (named, `--lab` or `--all`), in parallel: every VM named must exist
//! before any is touched; each failure is reported, and any makes the exit code 1. `stop`,
//! which may take a limit, is `stop.rs`'s.

use futures_util::future::join_all;

use crate::cli::Vms;
use crate::error::{Error, Result};
use crate::proxies::VmProxy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    PowerOff,
    Suspend,
    Resume,
    Reload,
    ResetDisks,
    DiscardState,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::PowerOff => "power off",
            Action::Suspend => "suspend",
            Action::Resume => "resume",
            Action::Reload => "reload",
            Action::ResetDisks => "reset the disks of",
            Action::DiscardState => "discard the saved state of",
        }
    }

    async fn apply(self, vm: &VmProxy<'_>) -> zbus::Result<()> {
        match self {
            Action::Start => vm.start().await,
            Action::PowerOff => vm.power_off().await,
            Action::Suspend => vm.suspend().await,
            Action::Resume => vm.resume().await,
            Action::Reload => vm.reload().await,
            Action::ResetDisks => vm.reset_disks().await,
            Action::DiscardState => vm.discard_saved_state().await,
        }
    }
}

pub async fn run(conn: &zbus::Connection, action: Action, which: &Vms) -> Result<()> {
    let vms = super::select(conn, which).await?;
    all_at_once(vms.iter().map(|(name, vm)| async move {
        action
            .apply(vm)
            .await
            .map_err(Error::call(format!("{} {name}", action.verb())))
    }))
    .await
}

/// Runs `calls` at once; their failures are told as [`report`] tells them.
pub(super) async fn all_at_once<F>(calls: impl IntoIterator<Item = F>) -> Result<()>
where
    F: std::future::Future<Output = Result<()>>,
{
    let results = join_all(calls).await;
    report(results.into_iter().filter_map(|r| r.err()).collect())
}

/// One failure is the error; several are each printed, and counted.
pub(super) fn report(mut failed: Vec<Error>) -> Result<()> {
    match failed.len() {
        0 => Ok(()),
        1 => Err(failed.remove(0)),
        n => {
            for e in &failed {
                eprintln!("{}", crate::output::failure(&e.to_string()));
                if let Some(hint) = e.hint() {
                    eprintln!("{hint}");
                }
            }
            Err(Error::Several(n))
        }
    }
}
