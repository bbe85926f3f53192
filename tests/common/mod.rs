//! The integration test harness: a private bus with the project's policy, the real daemon
//! binary, zbus proxies, the test guest and its serial console.
#![allow(dead_code, unused_imports)] // each test file uses a part of the harness

pub mod bus;
pub mod bystanders;
pub mod compute;
pub mod console;
pub mod ctl;
pub mod gns3;
pub mod invariants;
pub mod monitor;
pub mod udp;
pub mod users;

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use zbus::{OwnedObjectPath, Variant};

pub use bus::Bus;
pub use console::Console;
// The client's proxies: the tests and gns3-qemuctl drive the daemon through the same ones.
pub use gns3_qemuctl::proxies::{ManagerProxy, VmProxy};

pub const DAEMON: &str = env!("CARGO_BIN_EXE_gns3-qemud");
/// The tests run guests under TCG: on these machines /dev/kvm opens but a stock guest hangs.
pub const TEST_CONFIG: &str = "accelerator = \"tcg\"\n";

/// Console (TCP) and UDP port ranges of their own for each daemon: daemons running side by
/// side would otherwise hand out the same free ports, and their QEMUs would collide. Each
/// range is one of 100 slots, held by a lock on a file (flock) for as long as this process
/// lives, so that the test binaries tests/cargo-test.sh runs at once never share one. Past
/// 100 daemons at once, slots are shared again, as it says.
fn test_port_ranges() -> ([u16; 2], [u16; 2]) {
    use nix::fcntl::{Flock, FlockArg};
    static HELD: std::sync::Mutex<Vec<Flock<std::fs::File>>> = std::sync::Mutex::new(Vec::new());
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let ranges = |n: u16| {
        let (console, udp) = (5000 + n * 50, 20000 + n * 50);
        ([console, console + 49], [udp, udp + 49])
    };
    let dir = Path::new("/tmp/gns3-qemud-test-slots");
    std::fs::create_dir_all(dir).unwrap();
    let first = (std::process::id() % 100) as u16;
    for i in 0..100 {
        let n = (first + i) % 100;
        let file = std::fs::File::create(dir.join(n.to_string())).unwrap();
        if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            HELD.lock().unwrap().push(lock);
            return ranges(n);
        }
    }
    let n = (first + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) % 100;
    eprintln!("every port slot is held: daemon ports {n} shared with another test's");
    ranges(n)
}

/// The test config (TCG, port ranges of its own, and `extra` lines) in `dir`.
pub fn write_test_config(dir: &Path, extra: &str) {
    let (console, udp) = test_port_ranges();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("gns3-qemud.toml"),
        format!("{TEST_CONFIG}console_port_range = {console:?}\nudp_port_range = {udp:?}\n{extra}"),
    )
    .unwrap();
}

/// A gns3-qemud on a private bus, with its own state, runtime dir and config.
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub address: String,
    pub log: PathBuf,
    /// The daemon's console port range.
    pub ports: std::ops::RangeInclusive<u16>,
    /// The daemon's UDP port range (AllocateUdpPort).
    pub udp_ports: std::ops::RangeInclusive<u16>,
    /// Its NOTIFY_SOCKET, read up to READY=1 (see `notifications`).
    notify: UnixDatagram,
}

impl Daemon {
    /// Starts a daemon in a fresh directory and waits for READY=1.
    pub fn start(bus: &Bus, dir: &Path) -> Daemon {
        std::fs::create_dir_all(dir).unwrap();
        if !dir.join("gns3-qemud.toml").exists() {
            write_test_config(dir, "");
        }
        Self::start_in(bus, dir)
    }

    /// Starts a daemon on the state already in `dir` (a restart).
    pub fn start_in(bus: &Bus, dir: &Path) -> Daemon {
        Self::start_in_with_env(bus, dir, &[])
    }

    /// Starts a daemon on the state and config already in `dir`, with more environment.
    pub fn start_in_with_env(bus: &Bus, dir: &Path, env: &[(&str, &str)]) -> Daemon {
        let user = daemon_user();
        nix::unistd::chown(dir, Some(user.uid), Some(user.gid)).unwrap();
        Self::spawn(bus, dir, &user, env)
    }

    /// Starts a daemon in a fresh directory with more environment, as systemd would give.
    pub fn start_with_env(bus: &Bus, dir: &Path, env: &[(&str, &str)]) -> Daemon {
        write_test_config(dir, "");
        Self::start_in_with_env(bus, dir, env)
    }

    /// Starts a daemon as another user (which owns `dir`), as systemd would; with the test
    /// config unless `dir` has one.
    pub fn start_as(bus: &Bus, dir: &Path, user: &nix::unistd::User) -> Daemon {
        if !dir.join("gns3-qemud.toml").exists() {
            write_test_config(dir, "");
        }
        nix::unistd::chown(dir, Some(user.uid), Some(user.gid)).unwrap();
        Self::spawn(bus, dir, user, &[])
    }

    /// Every daemon under test runs as a user of its own, never as root, as the installed
    /// unit runs it.
    fn spawn(bus: &Bus, dir: &Path, user: &nix::unistd::User, env: &[(&str, &str)]) -> Daemon {
        assert!(!user.uid.is_root(), "the daemon under test runs as root");
        let notify_path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        nix::unistd::chown(&notify_path, Some(user.uid), Some(user.gid)).unwrap();
        // Short reads, so a daemon that exits early is seen at once.
        notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let config = gns3_qemud::config::Config::load(&dir.join("gns3-qemud.toml")).unwrap();
        let (ports, udp_ports) = (config.console_ports(), config.udp_ports());
        let log = dir.join("daemon.log");
        let log_file = append(&log);
        let mut command = Command::new(DAEMON);
        {
            use std::os::unix::process::CommandExt;
            // std drops root's supplementary groups along with the uid.
            command
                .uid(user.uid.as_raw())
                .gid(user.gid.as_raw())
                .env("HOME", dir);
        }
        let child = command
            .args(["--bus", &bus.address])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--runtime-dir")
            .arg(dir.join("run"))
            .arg("--config")
            .arg(dir.join("gns3-qemud.toml"))
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("JOURNAL_STREAM")
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut daemon = Daemon {
            child: Some(child),
            dir: dir.to_path_buf(),
            address: bus.address.clone(),
            log,
            ports,
            udp_ports,
            notify,
        };
        let mut buf = [0u8; 4096];
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(n) = daemon.notify.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if msg.lines().any(|l| l == "READY=1") {
                    break;
                }
                continue;
            }
            let status = daemon.child.as_mut().unwrap().try_wait().unwrap();
            if status.is_some() || Instant::now() > end {
                panic!(
                    "no READY=1 from the daemon; exit: {status:?}; log:\n{}",
                    daemon.log_text()
                );
            }
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
        let uids = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap();
        assert!(
            uids.split_whitespace().all(|u| u == user.uid.to_string()),
            "the daemon runs with uids {uids}, not {}'s",
            user.name
        );
        // The first start on a state dir is taken for the first after a boot of the host, and
        // keeps the boot id once its Autostart starts are over, after READY=1: waited for here,
        // so that a test comparing the state dir before and after a call sees only the call.
        let boot_id = dir.join("state/boot-id");
        while !boot_id.exists() {
            let status = daemon.child.as_mut().unwrap().try_wait().unwrap();
            if status.is_some() || Instant::now() > end {
                panic!(
                    "the daemon kept no boot id; exit: {status:?}; log:\n{}",
                    daemon.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        daemon
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What the daemon told systemd since READY=1 (or the last call), for `during`.
    pub fn notifications(&self, during: Duration) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let end = Instant::now() + during;
        while Instant::now() < end {
            if let Ok(n) = self.notify.recv(&mut buf) {
                out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        out
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL, as the OOM killer or a crash would: the VMs keep running.
    pub fn crash(&mut self) {
        let mut child = self.child.take().expect("daemon already stopped");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// A new daemon on the same state, once this one has exited (`terminate`, `crash`). Its
    /// QEMUs are left to the new daemon, not killed.
    pub fn restart(&mut self, bus: &Bus) {
        assert!(self.child.is_none(), "the daemon still runs");
        let new = Daemon::start_in(bus, &self.dir);
        std::mem::forget(std::mem::replace(self, new));
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon already stopped");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        wait_timeout(&mut child, Duration::from_secs(30))
    }

    pub async fn connect(&self) -> zbus::Connection {
        zbus::connection::Builder::address(self.address.as_str())
            .build()
            .await
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // VMs outlive the daemon by design: a test must not leave its QEMUs behind.
        kill_qemus_under(&self.dir);
    }
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    let end = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < end, "process {} did not exit", child.id());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills every QEMU whose command line mentions `dir` (the test's state and runtime dirs).
pub fn kill_qemus_under(dir: &Path) {
    for pid in qemu_pids_under(dir) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

pub fn qemu_pids_under(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    gns3_qemud::procfs::pids()
        .into_iter()
        .filter(|&pid| {
            let cmdline = gns3_qemud::procfs::args(pid).join(&b' ');
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains("qemu-system") && cmdline.contains(&needle)
        })
        .collect()
}

/// The swtpm processes (alive) whose command line mentions `dir`.
pub fn swtpm_pids_under(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    gns3_qemud::procfs::pids()
        .into_iter()
        .filter(|&pid| {
            let args = gns3_qemud::procfs::args(pid);
            let cmdline = String::from_utf8_lossy(&args.join(&b' ')).into_owned();
            args.first().is_some_and(|a| a.ends_with(b"swtpm"))
                && cmdline.contains(&needle)
                && pid_alive(pid)
        })
        .collect()
}

/// Alive, not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    gns3_qemud::procfs::running(pid)
}

/// The test guest (kernel + initramfs), built once per machine by tests/guest/build.sh,
/// as a copy any user may read: the daemon under test runs as its own user, and the build is
/// in root's home.
pub fn guest() -> &'static Path {
    static GUEST: OnceLock<PathBuf> = OnceLock::new();
    GUEST.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/guest/build.sh");
        let out = Command::new("bash")
            .arg(script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "tests/guest/build.sh failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let built = PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("build.sh prints the guest dir")
                .trim(),
        );
        readable_copy(&built)
    })
}

/// `built`'s guest files in a directory of /tmp named for their build, world-readable; each
/// file renamed into place whole, so test processes making it at once all find it complete.
fn readable_copy(built: &Path) -> PathBuf {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let stamp = std::fs::metadata(built.join("initrd.gz")).unwrap();
    let out = std::env::temp_dir().join(format!(
        "gns3-qemud-test-guest-{}-{}",
        stamp.mtime(),
        stamp.size()
    ));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["vmlinuz", "initrd.gz"] {
        if out.join(f).exists() {
            continue;
        }
        let tmp = out.join(format!(".{f}.{}", std::process::id()));
        std::fs::copy(built.join(f), &tmp).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&tmp, out.join(f)).unwrap();
    }
    out
}

/// Settings of a VM that boots the test guest.
pub fn guest_settings(
    extra: &[(&'static str, Variant<'static>)],
) -> HashMap<&'static str, Variant<'static>> {
    guest_settings_in(guest(), extra)
}

/// A copy of the test guest in `dir` that any user may read (the built one is under root's
/// home), for daemons that run as their own user.
pub fn shared_guest(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let out = dir.join("guest");
    std::fs::create_dir_all(&out).unwrap();
    for f in ["vmlinuz", "initrd.gz"] {
        std::fs::copy(guest().join(f), out.join(f)).unwrap();
        std::fs::set_permissions(out.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
    out
}

/// Settings of a VM that boots the test guest found in `g`.
pub fn guest_settings_in(
    g: &Path,
    extra: &[(&'static str, Variant<'static>)],
) -> HashMap<&'static str, Variant<'static>> {
    let mut s: HashMap<&str, Variant> = HashMap::new();
    s.insert(
        "KernelImage",
        Variant::from(g.join("vmlinuz").to_string_lossy().into_owned()),
    );
    s.insert(
        "Initrd",
        Variant::from(g.join("initrd.gz").to_string_lossy().into_owned()),
    );
    s.insert(
        "KernelCommandLine",
        Variant::from("console=ttyS0 panic=-1 quiet"),
    );
    s.insert("Ram", Variant::from(128u32));
    for (k, v) in extra {
        s.insert(k, v.clone());
    }
    s
}

pub async fn manager(conn: &zbus::Connection) -> ManagerProxy<'static> {
    ManagerProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap()
}

pub async fn vm(conn: &zbus::Connection, path: &OwnedObjectPath) -> VmProxy<'static> {
    VmProxy::builder(conn)
        .path(path.clone())
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap()
}

/// Creates a VM and returns its proxy.
pub async fn create(
    m: &ManagerProxy<'_>,
    name: &str,
    settings: HashMap<&str, Variant<'_>>,
) -> VmProxy<'static> {
    let path = m.create_vm(name, settings).await.unwrap();
    vm(m.inner().connection(), &path).await
}

/// A proxy that caches properties: the one kind whose change streams (`receive_*_changed`)
/// deliver PropertiesChanged.
pub async fn cached_vm(conn: &zbus::Connection, path: &OwnedObjectPath) -> VmProxy<'static> {
    VmProxy::builder(conn)
        .path(path.clone())
        .build()
        .await
        .unwrap()
}

/// A file of the contract, in `dbus/`.
pub fn contract_file(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("dbus")
            .join(name),
    )
    .unwrap()
}

/// The daemon's Properties at `path`.
pub async fn properties_proxy(
    conn: &zbus::Connection,
    path: &str,
) -> zbus::fdo::PropertiesProxy<'static> {
    zbus::fdo::PropertiesProxy::builder(conn)
        .destination("org.gns3.Qemu")
        .path(path.to_string())
        .build()
        .await
        .unwrap()
}

/// Every property of `iface` at `path`, as GetAll gives them.
pub async fn all_properties(
    conn: &zbus::Connection,
    path: &str,
    iface: &str,
) -> HashMap<String, zbus::OwnedVariant> {
    properties_proxy(conn, path)
        .await
        .get_all(zbus::names::InterfaceName::try_from(iface).unwrap())
        .await
        .unwrap()
}

/// The D-Bus error name of a failed call.
pub fn error_name(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, _, _) => name.to_string(),
        zbus::Error::FDO(fdo) => zbus::DBusError::name(fdo.as_ref()).to_string(),
        other => format!("not a method error: {other}"),
    }
}

/// Every file under `dir` with its content, for before/after comparisons.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.push((p.clone(), Vec::new()));
                walk(&p, out);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

/// The system user the daemon runs as (made by `users::ensure`, as the package makes it).
pub fn daemon_user() -> nix::unistd::User {
    users::ensure();
    nix::unistd::User::from_name("gns3-qemud")
        .unwrap()
        .expect("user gns3-qemud: users::ensure makes it, as root")
}

/// The supervisor's binary, built once per test process (see `workspace_bin`).
pub fn supervisor_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("gns3-qemud-supervisor", "gns3-qemud-supervisor"))
}

/// The client's binary, gns3-qemuctl, built once per test process (see `workspace_bin`).
pub fn ctl_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("gns3-qemuctl", "gns3-qemuctl"))
}

/// Binary `bin` of the workspace's package `package`. Cargo neither builds another package's
/// binary for a test nor gives its path (`CARGO_BIN_EXE_*` are the test's own package's), so
/// the harness has cargo build it, in the test's profile, and takes the path cargo reports:
/// never a stale one left in target/.
pub fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    // The test runs from target/<profile's directory>/deps/; the dev profile's is "debug".
    let exe = std::env::current_exe().unwrap();
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name);
    let profile = match dir.and_then(|d| d.to_str()).unwrap() {
        "debug" => "dev",
        p => p,
    };
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "--locked",
            "--message-format=json-render-diagnostics",
        ])
        .args(["--package", package, "--bin", bin])
        .arg(format!("--profile={profile}"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo did not build {bin}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
        .filter(|m| m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo names {bin}'s executable"))
}

/// A gns3-qemud-supervisor (as root, like the test) on a socket in a directory of the test.
pub struct Supervisor {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Supervisor {
    /// Starts one serving `uid` and waits until its socket is there.
    pub fn start(socket: &Path, uid: u32) -> Supervisor {
        let log = socket.with_extension("log");
        let log_file = append(&log);
        let _ = std::fs::remove_file(socket);
        let child = Command::new(supervisor_bin())
            .arg("--socket")
            .arg(socket)
            .arg("--daemon-uid")
            .arg(uid.to_string())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut sup = Supervisor {
            child,
            socket: socket.to_path_buf(),
            log,
        };
        let end = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            assert!(
                sup.child.try_wait().unwrap().is_none() && Instant::now() < end,
                "the supervisor did not come up:\n{}",
                sup.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        sup
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `path` opened for appending, for a child's stdout and stderr.
fn append(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// A free TCP port on loopback, found by binding port 0.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A daemon on a private bus in a fresh directory, with a client connection: what most tests
/// start from. Dropped in field order: clients, daemon (and its QEMUs), bus, directory.
/// A VM made from the test guest with `extra` settings, started, its console connected
/// once the guest says GUEST-READY (within `boot`).
pub async fn booted(
    lab: &Lab,
    name: &str,
    extra: &[(&'static str, Variant<'static>)],
    boot: Duration,
) -> (VmProxy<'static>, Console) {
    let vm = create(&lab.manager, name, guest_settings(extra)).await;
    vm.start().await.unwrap();
    let mut console = Console::connect(vm.console_port().await.unwrap());
    console.wait_for("GUEST-READY", boot).unwrap();
    (vm, console)
}

pub struct Lab {
    pub manager: ManagerProxy<'static>,
    pub conn: zbus::Connection,
    pub daemon: Daemon,
    pub bus: Bus,
    pub dir: tempfile::TempDir,
}

impl Lab {
    pub async fn start() -> Lab {
        Lab::with_config("").await
    }

    /// A lab whose daemon's configuration has `extra` lines beside the test config.
    pub async fn with_config(extra: &str) -> Lab {
        let bus = Bus::start();
        let dir = tempfile::tempdir().unwrap();
        write_test_config(dir.path(), extra);
        let daemon = Daemon::start(&bus, dir.path());
        let conn = daemon.connect().await;
        Lab {
            manager: manager(&conn).await,
            conn,
            daemon,
            bus,
            dir,
        }
    }
}

/// Polls `check` until it holds, for conditions no event tells (a process leaving /proc, a
/// guest powering off); false if it still does not after `timeout`.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    timeout: Duration,
    mut check: impl FnMut() -> F,
) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// xorshift64*: reproducible from its seed, which is all a test needs.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Whether this runs under CI (`CI=true`, as CI sets it), where a test that cannot check
/// what it exists for must fail rather than pass.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A test that cannot check what it claims: fails under CI, else says SKIPPED and why.
pub fn cannot_check(why: &str) {
    assert!(
        !under_ci(),
        "under CI this check must run, but it cannot: {why}"
    );
    println!("SKIPPED: {why}");
}

/// Whether the test runs as root; if not, `cannot_check` with `why` it needs root.
pub fn root_for(why: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    cannot_check(&format!("needs root {why}"));
    false
}

/// A blank 16 MiB qcow2 base image, `base.qcow2` in `dir`, made with qemu-img.
pub fn blank_base(dir: &Path) -> PathBuf {
    let base = dir.join("base.qcow2");
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&base)
        .arg("16M")
        .status()
        .unwrap();
    assert!(made.success(), "qemu-img create {}", base.display());
    base
}

/// A zeroed raw image of `bytes` at `path`, owned by the daemon's user, which may so use
/// it in place and write to it.
pub fn daemons_raw_image(path: &Path, bytes: u64) {
    std::fs::File::create(path).unwrap().set_len(bytes).unwrap();
    let user = daemon_user();
    nix::unistd::chown(path, Some(user.uid), Some(user.gid)).unwrap();
}

/// The internal snapshots of a qcow2 image, as `qemu-img snapshot -l` lists them (read
/// beside the QEMU that may hold it open).
pub fn snapshot_list(image: &Path) -> String {
    let out = Command::new("qemu-img")
        .args(["snapshot", "-l", "-U"])
        .arg(image)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `qemu-img args` in `dir` (relative names are relative to it) and asserts it worked.
pub fn qemu_img(dir: &Path, args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qemu-img {args:?} in {}: {out:?}",
        dir.display()
    );
}

/// The daemon's signals `member` (PropertiesChanged, or the ObjectManager's), from `path` if
/// given.
pub async fn signals(
    conn: &zbus::Connection,
    path: Option<&str>,
    member: &str,
) -> zbus::MessageStream {
    let iface = match member {
        "PropertiesChanged" => "org.freedesktop.DBus.Properties",
        _ => "org.freedesktop.DBus.ObjectManager",
    };
    let mut rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender("org.gns3.Qemu")
        .interface(iface)
        .member(member);
    if let Some(path) = path {
        rule = rule.path(path.to_string());
    }
    zbus::MessageStream::for_match_rule(rule.build().unwrap(), conn, None)
        .await
        .unwrap()
}

/// One PropertiesChanged: the interface, the changed properties, the invalidated ones.
pub type Change = (
    String,
    HashMap<String, zbus::zvariant::OwnedVariant>,
    Vec<String>,
);

pub async fn next_change(stream: &mut zbus::MessageStream) -> Change {
    let msg = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::StreamExt::next(stream),
    )
    .await
    .expect("no PropertiesChanged within 10 s")
    .unwrap()
    .unwrap();
    msg.body().deserialize().unwrap()
}
