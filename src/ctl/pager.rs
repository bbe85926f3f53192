//! A pager for people's long outputs, as systemd's tools start one: only when stdout is a
//! terminal and `--no-pager` is not given; `$SYSTEMD_PAGER`, else `$PAGER`, else the first of
//! `pager`, `less`, `more` that runs (an empty value or `cat`: none); less gets
//! `LESS=$SYSTEMD_LESS`, by default `FRSXMK` (quit if one screen, raw colours, keep the
//! screen, Ctrl-C quits), and `LESSCHARSET=$SYSTEMD_LESSCHARSET` if set. A pager that does
//! not start is no failure: the output goes to stdout as without one.

use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};

/// systemd's default options for less.
const LESS: &str = "FRSXMK";

/// The pagers to try, in order, from `$SYSTEMD_PAGER` and `$PAGER`: none if the one that
/// counts is empty or `cat`. A value is a command and its arguments, split at blanks.
pub fn choose(systemd_pager: Option<&str>, pager: Option<&str>) -> Vec<Vec<String>> {
    match systemd_pager.or(pager) {
        Some(given) => {
            let argv: Vec<String> = given.split_whitespace().map(str::to_string).collect();
            match argv.first().map(String::as_str) {
                None | Some("cat") => vec![],
                Some(_) => vec![argv],
            }
        }
        None => ["pager", "less", "more"]
            .iter()
            .map(|p| vec![p.to_string()])
            .collect(),
    }
}

/// A running pager reading what is written to stdout, until [`Pager::finish`] (or drop).
pub struct Pager {
    child: Child,
    /// The terminal stdout was, put back at the end.
    terminal: Option<OwnedFd>,
}

/// A pager on stdout, if one is wanted and starts.
pub fn start(no_pager: bool) -> Option<Pager> {
    if no_pager || !std::io::stdout().is_terminal() {
        return None;
    }
    let env = |name: &str| std::env::var(name).ok();
    let (systemd_pager, pager) = (env("SYSTEMD_PAGER"), env("PAGER"));
    for argv in choose(systemd_pager.as_deref(), pager.as_deref()) {
        let (program, args) = argv.split_first()?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::piped())
            .env("LESS", env("SYSTEMD_LESS").unwrap_or_else(|| LESS.into()));
        if let Some(charset) = env("SYSTEMD_LESSCHARSET") {
            command.env("LESSCHARSET", charset);
        }
        let Ok(mut child) = command.spawn() else {
            continue;
        };
        let stdout = std::io::stdout();
        let _ = stdout.lock().flush();
        let terminal = stdout.as_fd().try_clone_to_owned().ok();
        let input = child.stdin.take();
        let moved = match (&terminal, &input) {
            (Some(_), Some(pipe)) => nix::unistd::dup2(pipe.as_raw_fd(), 1).is_ok(),
            _ => false,
        };
        // Our copy of the pipe is closed: stdout holds it now, or the pager sees EOF.
        drop(input);
        let pager = Pager { child, terminal };
        if !moved {
            drop(pager);
            return None;
        }
        return Some(pager);
    }
    None
}

impl Pager {
    /// Gives stdout back to the terminal, which ends the pager's input, and waits for the
    /// person to quit it.
    pub fn finish(self) {
        drop(self)
    }
}

impl Drop for Pager {
    fn drop(&mut self) {
        let _ = std::io::stdout().lock().flush();
        if let Some(terminal) = self.terminal.take() {
            let _ = nix::unistd::dup2(terminal.as_raw_fd(), 1);
        }
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::choose;

    fn argv(list: &[&[&str]]) -> Vec<Vec<String>> {
        list.iter()
            .map(|a| a.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    #[test]
    fn the_pager_is_systemds_choice() {
        let defaults = argv(&[&["pager"], &["less"], &["more"]]);
        assert_eq!(choose(None, None), defaults);
        assert_eq!(choose(Some("most"), Some("less")), argv(&[&["most"]]));
        assert_eq!(choose(None, Some("less -S")), argv(&[&["less", "-S"]]));
        // SYSTEMD_PAGER counts first, even when it says no pager.
        assert_eq!(choose(Some(""), Some("less")), argv(&[]));
        assert_eq!(choose(Some("cat"), Some("less")), argv(&[]));
        assert_eq!(choose(None, Some("cat")), argv(&[]));
        assert_eq!(choose(None, Some("  ")), argv(&[]));
    }
}
