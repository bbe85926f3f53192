//! ProcessPriority and CpuThrottling, with the daemon as its own unprivileged user: through
//! gns3-qemud-supervisor, and without one. Needs root (to create the user, run the daemon as
//! it, and run the supervisor).

mod common;

use common::*;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use zbus::Variant;

use gns3_qemud::model::Priority;
use gns3_qemud::supervisor::priority::{nice_of, threads};
use gns3_qemud::supervisor::protocol::{Envelope, Link, Reply, Request, VERSION};

const BOOT: Duration = Duration::from_secs(60);
const SHELL: Duration = Duration::from_secs(10);
/// How long a CPU measurement lasts.
const SAMPLE: Duration = Duration::from_secs(5);

fn is_root() -> bool {
    root_for("to run the daemon as its own user and the supervisor")
}

/// A directory every user may enter, for the daemon's user to reach what is in it.
fn open_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A stand-in QEMU for the supervisor, which serves only QEMUs: `sleep` under QEMU's name,
/// in `dir`, which every user may enter.
fn fake_qemu(dir: &Path) -> PathBuf {
    let exe = dir.join("qemu-system-x86_64");
    if !exe.exists() {
        std::fs::copy("/bin/sleep", &exe).unwrap();
    }
    exe
}

/// The nice value of every thread of `pid`.
fn nices(pid: u32) -> Vec<i32> {
    threads(pid)
        .unwrap()
        .into_iter()
        .filter_map(|t| nice_of(pid, t).ok())
        .collect()
}

fn assert_all_threads(pid: u32, level: &str, nice: i32) {
    let n = nices(pid);
    // TCG runs at least the main loop, the RCU thread and a vCPU thread.
    assert!(n.len() >= 3, "only {} threads", n.len());
    assert!(
        n.iter().all(|&v| v == nice),
        "{level}: want nice {nice} on every thread, got {n:?}"
    );
}

/// CPU time `pid` used over `SAMPLE`, in percent of one CPU, from /proc/<pid>/stat.
fn cpu_percent(pid: u32) -> f64 {
    let ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime: fields 14 and 15, counted from the state (field 3).
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (t0, start) = (ticks(), Instant::now());
    std::thread::sleep(SAMPLE);
    let used = (ticks() - t0) as f64 / hz;
    used / start.elapsed().as_secs_f64() * 100.0
}

/// The cgroup directory of `pid` in the cgroup v1 hierarchy with cpu.
fn cpu_cgroup(pid: u32) -> Option<PathBuf> {
    let h = gns3_qemud::supervisor::cgroup::Hierarchy::detect()?;
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers
            .split(',')
            .any(|c| c == "cpu")
            .then(|| path.trim_start_matches('/').to_string())
    })?;
    Some(h.parent.parent()?.join(rel))
}

/// How the supervisor limits a QEMU's CPU: a cgroup of its own where a hierarchy has the
/// cpu controller writable, else a cpulimit process. `of` checks that the limit is in place.
enum Limit {
    Cgroup(PathBuf),
    Cpulimit(Vec<u32>),
}

impl Limit {
    fn of(pid: u32) -> Limit {
        if gns3_qemud::supervisor::cgroup::Hierarchy::detect().is_some() {
            let cg = cpu_cgroup(pid).expect("QEMU in the cpu hierarchy");
            assert!(
                cg.ends_with(format!("gns3-qemud/qemu-{pid}")),
                "QEMU is in {}",
                cg.display()
            );
            return Limit::Cgroup(cg);
        }
        // The daemon's own, as its own user: root runs none.
        let limiters = gns3_qemud_cpulimits(pid, daemon_user().uid.as_raw());
        assert_eq!(limiters.len(), 1, "no cgroup: one cpulimit aimed at QEMU");
        Limit::Cpulimit(limiters)
    }

    fn describe(&self) -> String {
        match self {
            Limit::Cgroup(cg) => format!("the cgroup {}", cg.display()),
            Limit::Cpulimit(pids) => {
                format!("cpulimit (pid {pids:?}): no writable cgroup has the cpu controller")
            }
        }
    }

    /// Stop and Delete leave neither a cgroup nor a cpulimit behind.
    fn assert_gone(&self, pid: u32) {
        if let Limit::Cgroup(cg) = self {
            assert!(!cg.exists(), "{} is left", cg.display());
        }
        assert!(gns3_qemud::supervisor::cpulimit::find(pid).is_empty());
    }
}

fn cap_eff(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim()
        .to_string()
}

async fn start_console(vm: &VmProxy<'_>) -> (u32, Console) {
    vm.start().await.unwrap();
    // QEMU drops serial output while nobody listens: connect before the guest boots.
    let console = Console::connect(vm.console_port().await.unwrap());
    (vm.pid().await.unwrap(), console)
}

struct Setup {
    _bus: Bus,
    daemon: Daemon,
    manager: ManagerProxy<'static>,
    _conn: zbus::Connection,
    guest: PathBuf,
}

async fn setup(dir: &Path, supervisor: Option<&Path>) -> Setup {
    let user = daemon_user();
    let bus = Bus::start();
    let guest = shared_guest(dir);
    let ddir = dir.join("d");
    let extra = supervisor.map_or(String::new(), |s| {
        format!("supervisor_socket = {:?}\n", s.display().to_string())
    });
    write_test_config(&ddir, &extra);
    let daemon = Daemon::start_as(&bus, &ddir, &user);
    let conn = daemon.connect().await;
    let manager = manager(&conn).await;
    Setup {
        _bus: bus,
        daemon,
        manager,
        _conn: conn,
        guest,
    }
}

#[tokio::test]
async fn through_the_supervisor_every_thread_gets_its_priority_and_the_cpu_its_limit() {
    if !is_root() {
        return;
    }
    let dir = open_dir();
    let user = daemon_user();
    let socket = dir.path().join("supervisor.sock");
    let mut supervisor = Supervisor::start(&socket, user.uid.as_raw());
    let lab = setup(dir.path(), Some(&socket)).await;
    assert_eq!(
        cap_eff(lab.daemon.pid()),
        "0000000000000000",
        "the daemon has capabilities"
    );

    // Realtime at start: QEMU is still paused when it is set.
    let settings = guest_settings_in(
        &lab.guest,
        &[("ProcessPriority", Variant::from("realtime"))],
    );
    let vm = create(&lab.manager, "p", settings).await;
    let (pid, mut console) = start_console(&vm).await;
    assert_all_threads(pid, "realtime", -20);
    // Every other level live, then realtime again (ALL starts with it).
    for p in Priority::ALL.iter().skip(1).chain(&Priority::ALL[..1]) {
        vm.set_process_priority(p.as_str()).await.unwrap();
        assert_eq!(vm.process_priority().await.unwrap(), p.as_str());
        assert_all_threads(pid, p.as_str(), p.nice());
    }

    // A supervisor that dies is reached again once a new one listens.
    drop(supervisor);
    supervisor = Supervisor::start(&socket, user.uid.as_raw());
    vm.set_process_priority("high").await.unwrap();
    assert_all_threads(pid, "high", -5);
    vm.set_process_priority("normal").await.unwrap();

    console.wait_for("GUEST-READY", BOOT).unwrap();
    console.send_line("while :; do :; done &");
    console.run("true", SHELL).unwrap();
    let free = cpu_percent(pid);
    assert!(
        free > 70.0,
        "a spinning guest used only {free:.0}% of a CPU"
    );

    vm.set_cpu_throttling(30).await.unwrap();
    let limited = cpu_percent(pid);
    assert!(
        (20.0..=40.0).contains(&limited),
        "limited to 30%, the guest used {limited:.0}%"
    );
    let limit = Limit::of(pid);
    println!("CPU limit checked through {}", limit.describe());
    vm.set_cpu_throttling(0).await.unwrap();
    let lifted = cpu_percent(pid);
    println!("CPU of a spinning guest: {free:.0}% free, {limited:.0}% limited to 30%, {lifted:.0}% lifted");
    assert!(lifted > 70.0, "limit lifted, the guest used {lifted:.0}%");

    // Stop leaves no cgroup and no cpulimit behind.
    vm.set_cpu_throttling(50).await.unwrap();
    vm.stop().await.unwrap();
    limit.assert_gone(pid);

    // Delete too, with the limit set at start.
    let (pid, _console) = start_console(&vm).await;
    let limit = Limit::of(pid);
    vm.delete().await.unwrap();
    limit.assert_gone(pid);
    drop(supervisor);
}

#[tokio::test]
async fn without_a_supervisor_the_daemon_does_what_its_user_may_and_says_what_it_cannot() {
    if !is_root() {
        return;
    }
    let dir = open_dir();
    let lab = setup(dir.path(), None).await;
    let user = daemon_user();

    // Above normal needs privilege: Start fails and leaves nothing running.
    let settings = guest_settings_in(&lab.guest, &[("ProcessPriority", Variant::from("high"))]);
    let high = create(&lab.manager, "high", settings).await;
    let e = high.start().await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.PrivilegeFailed");
    let text = e.to_string();
    assert!(
        text.contains("supervisor_socket") && text.contains("'high'"),
        "{text}"
    );
    assert_eq!(high.state().await.unwrap(), "stopped");
    assert!(qemu_pids_under(dir.path()).is_empty(), "a QEMU is left");

    // low (the default), then lower: allowed. Back up: refused, and nothing changes.
    let vm = create(&lab.manager, "low", guest_settings_in(&lab.guest, &[])).await;
    vm.start().await.unwrap();
    let pid = vm.pid().await.unwrap();
    assert_all_threads(pid, "low", 5);
    vm.set_process_priority("very low").await.unwrap();
    assert_all_threads(pid, "very low", 19);
    let e = vm.set_process_priority("normal").await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.PrivilegeFailed");
    assert_eq!(vm.process_priority().await.unwrap(), "very low");
    assert_all_threads(pid, "very low", 19);

    // CPU limits with cpulimit, run as the daemon's own child.
    vm.set_cpu_throttling(40).await.unwrap();
    let limiters = gns3_qemud_cpulimits(pid, user.uid.as_raw());
    assert_eq!(limiters.len(), 1, "one cpulimit aimed at QEMU");
    vm.set_cpu_throttling(0).await.unwrap();
    assert!(gns3_qemud_cpulimits(pid, user.uid.as_raw()).is_empty());
    vm.set_cpu_throttling(40).await.unwrap();
    vm.stop().await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            gns3_qemud_cpulimits(pid, user.uid.as_raw()).is_empty()
        })
        .await,
        "a cpulimit is left"
    );
    assert!(!lab.daemon.log_text().contains("panicked"));
}

/// cpulimit processes of `uid` aimed at `pid`.
fn gns3_qemud_cpulimits(pid: u32, uid: u32) -> Vec<u32> {
    let wanted = format!("--pid={pid}");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{p}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let owner = gns3_qemud::supervisor::target::real_uid(p).ok();
        if args.first().is_some_and(|a| a.ends_with("cpulimit"))
            && args.contains(&wanted)
            && owner == Some(uid)
            && pid_alive(p)
        {
            out.push(p);
        }
    }
    out
}

/// One request to a supervisor, as the connecting process, with an optional pidfd.
fn ask(socket: &Path, request: Request, pidfd: Option<std::os::fd::BorrowedFd<'_>>) -> Reply {
    let stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    let mut link = Link::new(stream);
    let envelope = Envelope {
        version: VERSION,
        request,
    };
    // A refused peer may be answered and closed before it has sent anything.
    let _ = link.send(&envelope, pidfd);
    let (line, _) = link.receive().unwrap().expect("an answer");
    serde_json::from_slice(&line).unwrap()
}

fn renice(pid: u32) -> Request {
    Request::Renice { pid, nice: 3 }
}

/// A supervisor serving root (the test) at `socket` renices a QEMU of root.
fn renices_its_own(socket: &Path, dir: &Path) {
    let mut mine = std::process::Command::new(fake_qemu(dir))
        .arg("30")
        .spawn()
        .unwrap();
    let fd = gns3_qemud::pidfd::open(mine.id()).unwrap();
    assert_eq!(
        ask(socket, renice(mine.id()), Some(fd.as_fd())),
        Reply::Done
    );
    assert_eq!(nice_of(mine.id(), mine.id()).unwrap(), 3);
    let _ = mine.kill();
    let _ = mine.wait();
}

#[test]
fn the_supervisor_serves_one_uid_and_only_about_its_processes() {
    if !is_root() {
        return;
    }
    let dir = open_dir();
    let user = daemon_user();

    // The daemon's uid is served; root, connecting here, is not.
    let socket = dir.path().join("daemon.sock");
    let _sup = Supervisor::start(&socket, user.uid.as_raw());
    let me = std::process::id();
    let pidfd = gns3_qemud::pidfd::open(me).unwrap();
    match ask(&socket, renice(me), Some(pidfd.as_fd())) {
        Reply::Refused(why) => assert!(why.contains("serves uid"), "{why}"),
        other => panic!("root was served: {other:?}"),
    }

    // Served as root now: a process of another user is refused, one's own is done.
    let socket = dir.path().join("root.sock");
    let _sup = Supervisor::start(&socket, 0);
    let mut theirs = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new(fake_qemu(dir.path()))
            .arg("30")
            .uid(user.uid.as_raw())
            .gid(user.gid.as_raw())
            .spawn()
            .unwrap()
    };
    let fd = gns3_qemud::pidfd::open(theirs.id()).unwrap();
    match ask(&socket, renice(theirs.id()), Some(fd.as_fd())) {
        Reply::Refused(why) => assert!(why.contains("belongs to uid"), "{why}"),
        other => panic!("another user's process was reniced: {other:?}"),
    }
    assert_eq!(nice_of(theirs.id(), theirs.id()).unwrap(), 0);
    let _ = theirs.kill();
    let _ = theirs.wait();

    // One's own process that is not a QEMU: refused, saying what it is.
    let mut other = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let fd = gns3_qemud::pidfd::open(other.id()).unwrap();
    match ask(&socket, renice(other.id()), Some(fd.as_fd())) {
        Reply::Refused(why) => assert!(
            why.contains("is 'sleep', not a QEMU system emulator"),
            "{why}"
        ),
        other => panic!("a process that is no QEMU was reniced: {other:?}"),
    }
    assert_eq!(nice_of(other.id(), other.id()).unwrap(), 0);
    let _ = other.kill();
    let _ = other.wait();

    let mut mine = std::process::Command::new(fake_qemu(dir.path()))
        .arg("30")
        .spawn()
        .unwrap();
    let fd = gns3_qemud::pidfd::open(mine.id()).unwrap();
    // A pid that is not the pidfd's, and a request without its pidfd: refused.
    assert!(matches!(
        ask(&socket, renice(mine.id() + 1), Some(fd.as_fd())),
        Reply::Refused(_)
    ));
    assert!(matches!(
        ask(&socket, renice(mine.id()), None),
        Reply::Refused(_)
    ));
    assert_eq!(nice_of(mine.id(), mine.id()).unwrap(), 0);
    let _ = mine.kill();
    let _ = mine.wait();
    renices_its_own(&socket, dir.path());

    // Started by its socket, as systemd's socket unit does.
    let activated = dir.path().join("activated.sock");
    let mut activator = std::process::Command::new("systemd-socket-activate")
        .arg(format!("--listen={}", activated.display()))
        .arg(supervisor_bin())
        .args(["--daemon-uid", "0"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    // The file is there before the socket listens.
    while std::os::unix::net::UnixStream::connect(&activated).is_err() {
        assert!(
            Instant::now() < end,
            "systemd-socket-activate did not listen"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    renices_its_own(&activated, dir.path());
    let _ = activator.kill();
    let _ = activator.wait();

    // Another version is refused with what it speaks.
    let stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    let mut link = Link::new(stream);
    link.send(
        &serde_json::json!({"version": 1, "request": {"release": {"pid": 1}}}),
        None,
    )
    .unwrap();
    let (line, _) = link.receive().unwrap().unwrap();
    match serde_json::from_slice::<Reply>(&line).unwrap() {
        Reply::Refused(why) => assert!(why.contains("speaks version 2"), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// A peer gets one connection served at a time (a second waits for the first to close), and
/// no more than MAX_CONNECTIONS are open at once: the next is refused, saying so.
#[test]
fn the_supervisor_serves_one_connection_per_peer_and_a_bounded_number() {
    use gns3_qemud::supervisor::server::MAX_CONNECTIONS;
    if !is_root() {
        return;
    }
    let dir = open_dir();
    let socket = dir.path().join("bounded.sock");
    let _sup = Supervisor::start(&socket, 0);
    let connect = || std::os::unix::net::UnixStream::connect(&socket).unwrap();

    let mut mine = std::process::Command::new(fake_qemu(dir.path()))
        .arg("30")
        .spawn()
        .unwrap();
    let fd = gns3_qemud::pidfd::open(mine.id()).unwrap();
    let envelope = Envelope {
        version: VERSION,
        request: renice(mine.id()),
    };
    // The first connection is served (its answer shows it holds the peer's turn).
    let mut first = Link::new(connect());
    first.send(&envelope, Some(fd.as_fd())).unwrap();
    let (line, _) = first.receive().unwrap().expect("an answer");
    assert_eq!(serde_json::from_slice::<Reply>(&line).unwrap(), Reply::Done);
    let second = connect();
    second
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut link = Link::new(second.try_clone().unwrap());
    link.send(&envelope, Some(fd.as_fd())).unwrap();
    assert!(
        link.receive().is_err(),
        "a second connection of the same process was served beside the first"
    );
    // The rest of the slots, then one too many.
    let held: Vec<_> = (2..MAX_CONNECTIONS).map(|_| connect()).collect();
    let mut over = Link::new(connect());
    let (line, _) = over.receive().unwrap().expect("an answer");
    match serde_json::from_slice(&line).unwrap() {
        Reply::Refused(why) => {
            assert!(why.contains(&format!("at most {MAX_CONNECTIONS}")), "{why}")
        }
        other => panic!(
            "connection {} was not refused: {other:?}",
            MAX_CONNECTIONS + 1
        ),
    }
    // The waiting connections of this process close; the first last, which hands the turn
    // on: those that closed give it up at once, and the second is answered.
    drop(held);
    drop(first);
    second
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (line, _) = link
        .receive()
        .unwrap()
        .expect("the waiting request's answer");
    assert_eq!(serde_json::from_slice::<Reply>(&line).unwrap(), Reply::Done);
    assert_eq!(nice_of(mine.id(), mine.id()).unwrap(), 3);
    let _ = mine.kill();
    let _ = mine.wait();
}

/// Root never acts on a pid that changed hands between its check and its act. In a pid
/// namespace of its own, a stand-in QEMU of the daemon's user is killed and reaped while the
/// supervisor waits between checking it and acting (its test-only delay), and a process of
/// another user is given its pid (ns_last_pid): the supervisor answers that the QEMU is
/// gone, and that process keeps its nice value, runs, and stays out of every cgroup of ours.
#[test]
fn a_pid_reused_between_check_and_act_is_left_alone() {
    if !is_root() {
        return;
    }
    let dir = open_dir();
    fake_qemu(dir.path());
    let user = daemon_user();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pid-reuse.py");
    for what in ["renice", "throttle"] {
        let out = std::process::Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "/usr/bin/python3"])
            .arg(&script)
            .arg(supervisor_bin())
            .arg(dir.path())
            .args([user.uid.to_string(), user.gid.to_string()])
            .args(["65534", "65534", what])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{what}: {stderr}");
        let seen: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: {e}: {stderr}"));
        println!("{what}: {seen}");
        assert_eq!(
            seen["victim"], seen["qemu"],
            "{what}: the pid was not reused, so nothing was tried: {seen}"
        );
        let gone = format!("process {} is gone", seen["qemu"]);
        // Where no cgroup v1 has a writable cpu controller (a container), the supervisor
        // limits nothing at all, so there is no act to make late.
        let no_cgroups = gns3_qemud::supervisor::cgroup::Hierarchy::detect().is_none();
        let want = if what == "throttle" && no_cgroups {
            let why = gns3_qemud::supervisor::Error::NoCpuController.to_string();
            serde_json::json!({ "unsupported": why })
        } else {
            serde_json::json!({ "failed": gone })
        };
        assert_eq!(seen["reply"], want, "{what}");
        assert_eq!(
            seen["victim_nice"], 0,
            "{what}: the other user's process was reniced"
        );
        assert_eq!(seen["victim_state"], "S", "{what}: it was left stopped");
        assert_eq!(
            seen["victim_in_gns3_cgroup"], false,
            "{what}: it was moved into a cgroup"
        );
    }
}
