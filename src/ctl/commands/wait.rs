//! `wait VM... [--state S] [--console REGEX] [--timeout T]`, and [`until`], which `up --wait`
//! calls too: done once every VM is in its state and its console has shown what it must.
//! The daemon's signals are subscribed to before the states are read (see [`super::events`]);
//! the console is read with Replay, so what the guest printed before counts, and ReadOnly.
//! One waiter a VM, all at once; no limit unless `--timeout` gives one.

use futures_util::future::try_join_all;
use regex::bytes::Regex;
use std::cell::Cell;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use zbus::{OwnedObjectPath, Variant};

use crate::cli::{Wait, STATES};
use crate::duration;
use crate::error::{error_name, Error, Result};
use crate::events::{self, Event};
use crate::output::text;
use crate::snapshot;

/// What one VM must come to.
pub(crate) struct Goal {
    pub name: String,
    pub state: Option<String>,
    pub console: Option<String>,
}

/// How much console output is kept to match against: a regex sees at least this much
/// before the oldest half is let go.
const KEPT: usize = 1 << 20;

pub async fn run(conn: &zbus::Connection, w: Wait) -> Result<()> {
    // Without a condition, the usual one: that it runs.
    let state = match (&w.state, &w.console) {
        (None, None) => Some("running".to_string()),
        (s, _) => s.clone(),
    };
    let goals = w
        .vms
        .iter()
        .map(|name| Goal {
            name: name.clone(),
            state: state.clone(),
            console: w.console.clone(),
        })
        .collect();
    until(conn, goals, w.timeout.filter(|t| *t != Duration::MAX)).await
}

/// One waiter's progress, for the message of a timeout.
#[derive(Default)]
struct Progress {
    shown: Cell<bool>,
    done: Cell<bool>,
}

/// Waits until every goal is reached, or `timeout` passes ([`Error::TimedOut`], naming the
/// VMs not there yet). A bad state or regex is refused before anything is waited for.
pub(crate) async fn until(
    conn: &zbus::Connection,
    goals: Vec<Goal>,
    timeout: Option<Duration>,
) -> Result<()> {
    let mut patterns = Vec::with_capacity(goals.len());
    for goal in &goals {
        if let Some(state) = &goal.state {
            if !STATES.contains(&state.as_str()) {
                return Err(Error::Setting {
                    given: state.clone(),
                    why: format!("a state is one of {}", STATES.join(", ")),
                });
            }
        }
        let pattern = goal.console.as_deref().map(|given| {
            Regex::new(given).map_err(|e| Error::Pattern {
                given: given.to_string(),
                why: e.to_string(),
            })
        });
        patterns.push(pattern.transpose()?);
    }
    let mut stream = events::subscribe(conn).await?;
    let vms = snapshot::vms(conn).await?;
    // Each VM's state, as its signals tell it; None once it is deleted.
    let mut states: HashMap<String, watch::Sender<Option<String>>> = HashMap::new();
    let mut watched = Vec::with_capacity(goals.len());
    for goal in &goals {
        let vm = vms
            .iter()
            .find(|vm| vm.get("Name") == goal.name || vm.get("Id") == goal.name)
            .ok_or_else(|| Error::NoSuchVm(goal.name.clone()))?;
        let sender = states
            .entry(vm.path.to_string())
            .or_insert_with(|| watch::Sender::new(Some(vm.get("State"))));
        watched.push((vm.path.to_string(), sender.subscribe()));
    }
    let progress: Vec<Progress> = goals.iter().map(|_| Progress::default()).collect();
    let waiters = try_join_all(
        goals
            .iter()
            .zip(&patterns)
            .zip(&watched)
            .zip(&progress)
            .map(|(((goal, pattern), (path, state)), progress)| {
                wait_one(conn, goal, pattern.as_ref(), path, state.clone(), progress)
            }),
    );
    let follow = async {
        loop {
            match events::next(&mut stream).await? {
                Event::Changed { path, changed, .. } => {
                    if let (Some(sender), Some(state)) = (states.get(&path), changed.get("State")) {
                        sender.send_replace(Some(text(state)));
                    }
                }
                Event::Removed { path } => {
                    if let Some(sender) = states.get(&path) {
                        sender.send_replace(None);
                    }
                }
                Event::Added { .. } => {}
            }
        }
    };
    let all = async {
        tokio::select! {
            done = waiters => done.map(drop),
            failed = follow => failed,
        }
    };
    let Some(limit) = timeout else {
        return all.await;
    };
    match tokio::time::timeout(limit, all).await {
        Ok(done) => done,
        Err(_) => {
            let pending: Vec<String> = goals
                .iter()
                .zip(&watched)
                .zip(&progress)
                .filter(|(_, p)| !p.done.get())
                .map(|((goal, (_, state)), p)| {
                    let now = state.borrow().clone().unwrap_or_else(|| "deleted".into());
                    pending(goal, &now, p.shown.get())
                })
                .collect();
            Err(Error::TimedOut {
                after: duration::format(limit),
                pending: pending.join("; "),
            })
        }
    }
}

/// `r1 is stopped, not running, its console has not shown 'login:'`.
fn pending(goal: &Goal, now: &str, shown: bool) -> String {
    let mut said = format!("{} is {now}", goal.name);
    if let Some(state) = goal.state.as_deref().filter(|s| *s != now) {
        said.push_str(&format!(", not {state}"));
    }
    if let Some(pattern) = goal.console.as_deref().filter(|_| !shown) {
        said.push_str(&format!(", its console has not shown '{pattern}'"));
    }
    said
}

async fn wait_one(
    conn: &zbus::Connection,
    goal: &Goal,
    pattern: Option<&Regex>,
    path: &str,
    mut state: watch::Receiver<Option<String>>,
    progress: &Progress,
) -> Result<()> {
    let gone = || Error::NoSuchVm(goal.name.clone());
    if let Some(pattern) = pattern {
        let path = OwnedObjectPath::try_from(path.to_string()).map_err(Error::Connect)?;
        let vm = super::vm_at(conn, path).await?;
        loop {
            let now = state
                .wait_for(|s| matches!(s.as_deref(), None | Some("running" | "paused")))
                .await
                .map_err(|_| gone())?
                .clone();
            if now.is_none() {
                return Err(gone());
            }
            let options: HashMap<&str, Variant<'_>> = [
                ("Replay", Variant::from(true)),
                ("ReadOnly", Variant::from(true)),
            ]
            .into();
            match vm.open_console(options).await {
                Ok(fd) => {
                    if shows(OwnedFd::from(fd), pattern).await? {
                        break;
                    }
                }
                // It stopped before its signal came: wait for what it does next.
                Err(e) if error_name(&e).as_deref() == Some("org.gns3.Qemu.Error.InvalidState") => {
                    state.changed().await.map_err(|_| gone())?;
                }
                Err(e) => {
                    return Err(Error::call(format!("open the console of {}", goal.name))(e));
                }
            }
        }
        progress.shown.set(true);
    }
    if let Some(want) = &goal.state {
        let now = state
            .wait_for(|s| s.is_none() || s.as_ref() == Some(want))
            .await
            .map_err(|_| gone())?;
        if now.is_none() {
            return Err(gone());
        }
    }
    progress.done.set(true);
    Ok(())
}

/// Whether the console on `fd` shows `pattern` before it closes.
async fn shows(fd: OwnedFd, pattern: &Regex) -> Result<bool> {
    let socket = std::os::unix::net::UnixStream::from(fd);
    socket.set_nonblocking(true)?;
    let mut socket = tokio::net::UnixStream::from_std(socket)?;
    let mut seen = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return Ok(false),
            Ok(n) => n,
        };
        seen.extend_from_slice(&chunk[..n]);
        if pattern.is_match(&seen) {
            return Ok(true);
        }
        if seen.len() > KEPT {
            seen.drain(..seen.len() - KEPT / 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_says_what_is_missing() {
        let goal = |state: Option<&str>, console: Option<&str>| Goal {
            name: "r1".into(),
            state: state.map(str::to_string),
            console: console.map(str::to_string),
        };
        assert_eq!(
            pending(&goal(Some("running"), None), "stopped", false),
            "r1 is stopped, not running"
        );
        assert_eq!(
            pending(&goal(None, Some("login:")), "running", false),
            "r1 is running, its console has not shown 'login:'"
        );
        assert_eq!(
            pending(&goal(Some("stopped"), Some("x")), "running", true),
            "r1 is running, not stopped"
        );
    }
}
