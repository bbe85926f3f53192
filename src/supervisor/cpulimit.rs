//! CPU limits where there is no cpu controller: the `cpulimit` tool, as the seed used it.
//! It stops and continues the process to hold it near the limit, exits by itself once the
//! process is gone (`--lazy`), and continues the process when it is told to stop.
//!
//! Nothing keeps a table of these: the cpulimit of a process is found in /proc by its
//! command line, so a restarted supervisor (or daemon) still finds the ones it started.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::error::{Error, Result};
use super::target::real_uid;

/// Starts limiting `pid` to `percent` of one CPU, in place of any cpulimit already on it.
pub fn start(pid: u32, percent: u32) -> Result<()> {
    stop(pid);
    let mut child = Command::new("cpulimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--limit={percent}"))
        .args(["--lazy", "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|source| Error::Cpulimit { pid, source })?;
    // Someone has to reap it when it exits with its target.
    std::thread::spawn(move || child.wait());
    Ok(())
}

/// Stops every cpulimit of ours aimed at `pid`, and waits (a little) for them to go;
/// returns how many there were.
pub fn stop(pid: u32) -> usize {
    let found = find(pid);
    for &c in &found {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let end = Instant::now() + Duration::from_secs(2);
    while found.iter().any(|&c| crate::procfs::running(c)) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    found.len()
}

/// The cpulimit processes of this uid whose target is `pid`.
pub fn find(pid: u32) -> Vec<u32> {
    let me = nix::unistd::getuid().as_raw();
    let wanted = format!("--pid={pid}");
    crate::procfs::pids()
        .into_iter()
        .filter(|&p| {
            let args = crate::procfs::args(p);
            let is_cpulimit = args
                .first()
                .is_some_and(|a| a == b"cpulimit" || a.ends_with(b"/cpulimit"));
            is_cpulimit
                && args.iter().any(|a| a == wanted.as_bytes())
                && real_uid(p).is_ok_and(|u| u == me)
                && crate::procfs::running(p)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpulimit_is_found_by_its_target_and_stopped() {
        if Command::new("cpulimit").arg("--help").output().is_err() {
            println!("SKIPPED: cpulimit is not installed");
            return;
        }
        let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = sleeper.id();
        start(pid, 50).unwrap();
        let end = Instant::now() + Duration::from_secs(5);
        while find(pid).is_empty() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(find(pid).len(), 1);
        // Replacing it leaves one.
        start(pid, 20).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(find(pid).len(), 1);
        assert_eq!(stop(pid), 1);
        assert!(find(pid).is_empty());
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
    }
}
