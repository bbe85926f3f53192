//! gns3-server 3.0.6 from PyPI, in a venv under the user's cache, installed once per machine.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use super::VERSION;

/// The `gns3server` executable of gns3-server 3.0.6, installed on first use (about 20 s)
/// into `${XDG_CACHE_HOME:-$HOME/.cache}/gns3-qemud/gns3-server-3.0.6` and reused after.
pub fn gns3_server() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(install).clone()
}

fn cache_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache")
        });
    cache.join("gns3-qemud")
}

/// Debian's interpreter where there is one (python3-venv gives it `venv`), so that the venv
/// does not depend on a user's own Python; else the first python3 in PATH.
fn python() -> PathBuf {
    let debian = Path::new("/usr/bin/python3");
    if debian.exists() {
        debian.to_path_buf()
    } else {
        PathBuf::from("python3")
    }
}

/// A venv is not movable (pip writes its absolute path into every script it installs), so
/// it is made in place, under a lock that test processes running at once all take, and it
/// counts as installed only once its marker, written last, is there.
fn install() -> PathBuf {
    let dir = cache_dir().join(format!("gns3-server-{VERSION}"));
    let bin = dir.join("bin/gns3server");
    let marker = dir.join(".installed");
    std::fs::create_dir_all(cache_dir()).unwrap();
    let lock = File::create(cache_dir().join(format!("gns3-server-{VERSION}.lock"))).unwrap();
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("locking the gns3-server venv: {e}"));
    if marker.exists() && version_of(&bin).as_deref() == Some(VERSION) {
        return bin;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let started = Instant::now();
    let mut venv = Command::new(python());
    venv.args(["-m", "venv"]).arg(&dir);
    run(&mut venv);
    let mut pip = Command::new(dir.join("bin/pip"));
    pip.args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("gns3-server=={VERSION}"));
    // pip trusts its own certificate bundle, not the machine's: where the way to PyPI needs
    // a local authority (installed in the system's store), it would refuse the connection.
    let system_store = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if std::env::var_os("PIP_CERT").is_none() && system_store.exists() {
        pip.arg("--cert").arg(system_store);
    }
    run(&mut pip);
    let version = version_of(&bin);
    assert_eq!(
        version.as_deref(),
        Some(VERSION),
        "{} --version after the install",
        bin.display()
    );
    std::fs::write(&marker, "").unwrap();
    eprintln!(
        "installed gns3-server {VERSION} in {} ({:.1} s)",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    bin
}

fn run(command: &mut Command) {
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}); python3 -m venv needs Debian's python3-venv:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn version_of(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
