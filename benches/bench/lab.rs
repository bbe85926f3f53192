//! What the sections share: a daemon on a private bus configured for the bench, raw method
//! calls timed one by one, and the daemon's memory and CPU time read from /proc.

use crate::common::{self, Bus, Console, Daemon, ManagerProxy, VmProxy};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use zbus::{DynamicType, OwnedObjectPath, Variant};

/// A daemon as a distro runs it (log level info, the environment its unit gives it; TCG for
/// the guests), on a private bus with the project's policy, and a client connection. Its
/// port ranges hold 1 000 VMs, apart from the tests' ranges.
pub struct BenchLab {
    pub manager: ManagerProxy<'static>,
    pub conn: zbus::Connection,
    pub daemon: Daemon,
    env: Vec<(String, String)>,
    // Dropped after the daemon, which uses them.
    bus: Bus,
    dir: tempfile::TempDir,
    _run: tempfile::TempDir,
}

impl BenchLab {
    pub async fn start() -> BenchLab {
        Self::with_config(
            "accelerator = \"tcg\"\nconsole_port_range = [30000, 32700]\nudp_port_range = [20000, 29999]\n",
            None,
        )
        .await
    }

    /// A lab whose daemon reads `config`, with its state directory in `parent` (a temp dir
    /// of the default place if none) and its runtime directory on tmpfs, as /run is.
    pub async fn with_config(config: &str, parent: Option<&Path>) -> BenchLab {
        let bus = Bus::start();
        let dir = match parent {
            Some(p) => tempfile::tempdir_in(p),
            None => tempfile::tempdir(),
        }
        .expect("temp dir for the daemon");
        let run = tmpfs_dir();
        let user = common::daemon_user();
        nix::unistd::chown(run.path(), Some(user.uid), Some(user.gid))
            .expect("the runtime dir given to the daemon's user");
        std::os::unix::fs::symlink(run.path(), dir.path().join("run"))
            .expect("the daemon's runtime dir linked to tmpfs");
        std::fs::write(dir.path().join("gns3-qemud.toml"), config)
            .expect("writing the bench config");
        let mut env = unit_environment();
        env.push(("RUST_LOG".into(), "info".into()));
        let daemon = Daemon::start_in_with_env(&bus, dir.path(), &pairs(&env));
        let conn = daemon.connect().await;
        BenchLab {
            manager: common::manager(&conn).await,
            conn,
            daemon,
            env,
            bus,
            dir,
            _run: run,
        }
    }

    /// Stops the daemon (SIGTERM) and starts it again on its state; the time from the new
    /// daemon's spawn to its READY=1 (and its boot id kept, as the tests wait for). The
    /// lab's client connection stays.
    pub fn restart(&mut self) -> Duration {
        let status = self.daemon.terminate();
        assert!(
            status.success(),
            "the daemon exited with {status} on SIGTERM"
        );
        let t = Instant::now();
        let new = Daemon::start_in_with_env(&self.bus, self.dir.path(), &pairs(&self.env));
        let ready = t.elapsed();
        // Not dropped: that would end the QEMUs under the state dir, which are the new one's.
        std::mem::forget(std::mem::replace(&mut self.daemon, new));
        ready
    }

    /// Creates `n` VMs named `<prefix>-<i>` with `settings`; returns their paths.
    pub async fn create_many(
        &self,
        prefix: &str,
        n: usize,
        settings: &HashMap<&'static str, Variant<'static>>,
    ) -> Vec<OwnedObjectPath> {
        let mut paths = Vec::with_capacity(n);
        for i in 0..n {
            let path = self
                .manager
                .create_vm(&format!("{prefix}-{i}"), settings.clone())
                .await
                .unwrap_or_else(|e| panic!("CreateVM {prefix}-{i}: {e}"));
            paths.push(path);
        }
        paths
    }

    pub async fn vm(&self, path: &OwnedObjectPath) -> VmProxy<'static> {
        common::vm(&self.conn, path).await
    }

    /// The daemon's memory now.
    pub fn memory(&self) -> Memory {
        Memory::of(self.daemon.pid())
    }

    /// CPU time the daemon has used so far (user + system).
    pub fn cpu_time(&self) -> Duration {
        cpu_time(self.daemon.pid())
    }

    /// CPU time the bus (dbus-daemon) has used so far.
    pub fn bus_cpu_time(&self) -> Duration {
        cpu_time(self.bus.pid())
    }
}

/// The VM the sections measure: 64 MiB of RAM, no disk of its own (the daemon makes its
/// blank flash disk at the first Start) and no kernel.
pub fn small_vm() -> HashMap<&'static str, Variant<'static>> {
    HashMap::from([("Ram", Variant::from(64u32))])
}

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The `Environment=` lines of the daemon's unit.
fn unit_environment() -> Vec<(String, String)> {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/gns3-qemud.service");
    std::fs::read_to_string(unit)
        .unwrap_or_else(|e| panic!("reading {unit}: {e}"))
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .flat_map(str::split_whitespace)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Timed round trips of one method call, made the same way for the daemon and for the bus
/// itself, so that the client's own cost is alike on both sides.
pub async fn time_calls<B>(
    conn: &zbus::Connection,
    (dest, path, iface, method): (&str, &str, &str, &str),
    body: &B,
    runs: usize,
) -> Vec<f64>
where
    B: serde::Serialize + DynamicType,
{
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        conn.call_method(Some(dest), path, Some(iface), method, body)
            .await
            .unwrap_or_else(|e| panic!("{iface}.{method} on {path}: {e}"));
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    out
}

/// A process's resident memory, from /proc/<pid>/status, in KiB: all of it, and the part
/// that is its own heap and stacks (the rest is the mapped binary and libraries, shared
/// with every other process that maps them).
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    pub rss_kib: f64,
    pub anon_kib: f64,
}

impl Memory {
    pub fn of(pid: u32) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
        let field = |name: &str| -> f64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        };
        Memory {
            rss_kib: field("VmRSS:"),
            anon_kib: field("RssAnon:"),
        }
    }
}

pub fn cpu_time(pid: u32) -> Duration {
    stat_ticks(pid, &[14, 15])
}

/// The sum of fields `fields` of /proc/<pid>/stat, which count the kernel's clock ticks
/// (user and system time; a start time since boot).
pub fn stat_ticks(pid: u32, fields: &[usize]) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/stat: {e}"));
    let ticks: u64 = fields
        .iter()
        .map(|&n| {
            gns3_qemud::procfs::stat_field(&stat, n)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("field {n} of /proc/{pid}/stat"))
        })
        .sum();
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// The time the threads of process `pid` have run so far, to the nanosecond (the first
/// field of each one's /proc/<pid>/task/<tid>/schedstat): the clock ticks of
/// /proc/<pid>/stat are 10 ms, longer than a call. Threads that ended are not counted.
pub fn run_time(pid: u32) -> Duration {
    schedstat(pid, 0)
}

/// The time the threads of process `pid` have waited for a CPU so far, runnable but not
/// running (the second field of the same).
pub fn wait_time(pid: u32) -> Duration {
    schedstat(pid, 1)
}

fn schedstat(pid: u32, field: usize) -> Duration {
    let tasks = format!("/proc/{pid}/task");
    let ns: u64 = std::fs::read_dir(&tasks)
        .unwrap_or_else(|e| panic!("reading {tasks}: {e}"))
        .filter_map(|task| {
            let path = task.ok()?.path().join("schedstat");
            // A thread that ended meanwhile has none.
            let text = std::fs::read_to_string(path).ok()?;
            text.split_whitespace().nth(field)?.parse::<u64>().ok()
        })
        .sum();
    Duration::from_nanos(ns)
}

/// Milliseconds of a duration, the unit most figures are printed in.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Markers of our own, apart from Console::run's, that the typed line's echo never matches
/// (the shell computes the number).
pub fn next_marker() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Runs `cmd` in the guest's shell; returns the time between the shell's markers before and
/// after it (both cross the same console, so its latency cancels out), and its output. The
/// first marker must come within `begin`, the second `end` after it.
pub fn timed(
    console: &mut Console,
    cmd: &str,
    begin: Duration,
    end: Duration,
) -> Result<(Duration, String), String> {
    let n = next_marker();
    console.send_line(&format!("echo T0_$((1+{n}))_; {cmd}; echo T1_$((1+{n}))_"));
    console.wait_for(&format!("T0_{}_", n + 1), begin)?;
    let start = Instant::now();
    let last = format!("T1_{}_", n + 1);
    let out = console.wait_for(&last, end)?;
    Ok((start.elapsed(), out[..out.len() - last.len()].to_string()))
}

/// A temp dir on tmpfs (/dev/shm), where the runtime files of the daemon and of the QEMUs
/// started by hand go: /run is tmpfs on every systemd host; a disk's filesystem makes creating
/// and removing them cost what production never pays.
pub fn tmpfs_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").expect("a temp dir on /dev/shm")
}
