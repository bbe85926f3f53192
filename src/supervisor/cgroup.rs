//! CPU limits through the kernel's cpu controller, a cgroup per QEMU, `qemu-<pid>`:
//! - on cgroup v1 (hybrid hosts, and this project's CI, keep cpu on v1), the supervisor's:
//!   `gns3-qemud/qemu-<pid>` at the top of the cpu hierarchy, with `cpu.cfs_quota_us`;
//! - on cgroup v2 under systemd, the daemon's own: its unit delegates its cgroup
//!   (`Delegate=cpu`), and each QEMU goes into `<unit>/qemu-<pid>`, with `cpu.max` where the
//!   unit has the cpu controller. Those children are *threaded*: the daemon stays in the
//!   unit's own cgroup, where systemd starts each new daemon after a restart while the old
//!   QEMUs live on, and a cgroup with processes of its own may hand only threaded
//!   controllers (cpu is one) down to children, and only to threaded ones. Domain
//!   children with cpu would make that restart fail (EBUSY) for as long as a VM runs.
//!
//! The directory goes once the process has exited. Every path starts at a `root` (`/` on a
//! real host), so the tests below run the same code against a fake tree in a temp dir.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::error::{Error, Result};

/// The directory, at the top of a v1 hierarchy, that holds one cgroup per limited process.
const PARENT: &str = "gns3-qemud";
/// The CFS period: quotas are percent × 1 ms.
const PERIOD_US: u64 = 100_000;
/// Where systemd mounts the unified hierarchy.
const UNIFIED: &str = "sys/fs/cgroup";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    pub version: Version,
    /// The cgroup whose children are the QEMUs' (under `root`).
    pub parent: PathBuf,
    /// Whether the children have the cpu controller: a v2 unit may have none to delegate,
    /// and its QEMUs then have cgroups without limits.
    pub cpu: bool,
}

impl Hierarchy {
    /// The cgroup v1 hierarchy of this host that has the cpu controller, if any.
    pub fn detect() -> Option<Hierarchy> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
        Self::find(&mounts, Path::new("/"))
    }

    /// The cgroup v1 hierarchy with the cpu controller among `mounts` (the format of
    /// /proc/self/mounts); paths are taken under `root`. A read-only mount is passed over:
    /// containers (systemd-nspawn on cgroup v1) show the host's cpu controller read-only.
    pub fn find(mounts: &str, root: &Path) -> Option<Hierarchy> {
        mounts.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype, options) = (f.next()?, f.next()?, f.next()?, f.next()?);
            let mut options = options.split(',');
            let usable = fstype == "cgroup"
                && !options.clone().any(|o| o == "ro")
                && options.any(|o| o == "cpu");
            usable.then(|| Hierarchy {
                version: Version::V1,
                parent: root.join(dir.trim_start_matches('/')).join(PARENT),
                cpu: true,
            })
        })
    }

    /// The cgroup the calling process's unit delegated to it, on a host whose unified
    /// hierarchy is mounted at /sys/fs/cgroup; the cpu controller is handed down to its
    /// children where the unit has it.
    pub fn delegated() -> Option<Hierarchy> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        Self::delegated_in(
            &mounts,
            &own,
            Path::new("/"),
            nix::unistd::geteuid().as_raw(),
        )
    }

    /// [`Hierarchy::delegated`] from the text of /proc/self/mounts and /proc/self/cgroup,
    /// under `root`, for `uid`: the cgroup is delegated if its `cgroup.procs` is `uid`'s.
    pub fn delegated_in(mounts: &str, own: &str, root: &Path, uid: u32) -> Option<Hierarchy> {
        let unified = mounts.lines().any(|l| {
            let mut f = l.split_whitespace();
            f.nth(1) == Some(format!("/{UNIFIED}").as_str()) && f.next() == Some("cgroup2")
        });
        let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
        let unit = root.join(UNIFIED).join(path.trim().trim_start_matches('/'));
        let owner = std::fs::metadata(unit.join("cgroup.procs")).ok()?.uid();
        if !unified || path.trim() == "/" || owner != uid {
            return None;
        }
        let has_cpu = |file: &str| {
            std::fs::read_to_string(unit.join(file))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu"))
        };
        let cpu = has_cpu("cgroup.controllers")
            && (has_cpu("cgroup.subtree_control")
                || write(&unit.join("cgroup.subtree_control"), "+cpu").is_ok());
        Some(Hierarchy {
            version: Version::V2,
            parent: unit,
            cpu,
        })
    }

    pub fn parent(&self) -> PathBuf {
        self.parent.clone()
    }

    /// The cgroup of process `pid`.
    pub fn dir(&self, pid: u32) -> PathBuf {
        self.parent().join(format!("qemu-{pid}"))
    }

    /// Limits process `pid` to `percent` of one CPU (0: no limit). A process already in its
    /// cgroup only has the limit changed; one that is not is moved there only if `may_move`
    /// (the caller vouches that the pid is pinned), else refused.
    pub fn limit(&self, pid: u32, percent: u32, may_move: bool) -> Result<()> {
        let dir = self.dir(pid);
        if self.holds(pid) {
            return self.set(&dir, percent);
        }
        if !may_move {
            return Err(Error::NotPlaced { pid });
        }
        let fresh = !dir.exists();
        let result = self
            .create(&dir)
            .and_then(|()| self.set(&dir, percent))
            // Writing a pid to cgroup.procs moves all its threads, in v1 as in v2.
            .and_then(|()| write(&dir.join("cgroup.procs"), &pid.to_string()));
        if result.is_err() && fresh {
            // Nothing half-made stays: a cgroup that never got its process goes again.
            let _ = std::fs::remove_dir(&dir);
        }
        result
    }

    /// Whether process `pid` is in its cgroup.
    pub fn holds(&self, pid: u32) -> bool {
        // A threaded cgroup lists its threads only; a process's first is its pid.
        let list = match self.version {
            Version::V1 => "cgroup.procs",
            Version::V2 => "cgroup.threads",
        };
        std::fs::read_to_string(self.dir(pid).join(list))
            .is_ok_and(|procs| procs.lines().any(|l| l.trim() == pid.to_string()))
    }

    fn set(&self, dir: &Path, percent: u32) -> Result<()> {
        let quota = (percent > 0).then(|| u64::from(percent) * PERIOD_US / 100);
        if !self.cpu {
            return match quota {
                Some(_) => Err(Error::NoCpuController),
                None => Ok(()),
            };
        }
        match self.version {
            Version::V2 => {
                let max = quota.map_or("max".to_string(), |q| q.to_string());
                write(&dir.join("cpu.max"), &format!("{max} {PERIOD_US}"))
            }
            Version::V1 => {
                write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                let quota = quota.map_or("-1".to_string(), |q| q.to_string());
                write(&dir.join("cpu.cfs_quota_us"), &quota)
            }
        }
    }

    fn create(&self, dir: &Path) -> Result<()> {
        match self.version {
            Version::V2 => {
                mkdir(dir)?;
                write(&dir.join("cgroup.type"), "threaded")
            }
            Version::V1 => {
                mkdir(&self.parent)?;
                mkdir(dir)
            }
        }
    }

    /// Removes the cgroup of `pid`, which has exited; nothing to do if it has none.
    pub fn release(&self, pid: u32) -> Result<()> {
        let dir = self.dir(pid);
        match std::fs::remove_dir(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Rmdir { path: dir, source }),
        }
    }

    /// Removes the cgroups of processes that have exited without a `release` (the daemon
    /// was down when they did). Returns the pids whose cgroup went.
    pub fn sweep(&self, alive: impl Fn(u32) -> bool) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(self.parent()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("qemu-")?.parse().ok())
            .filter(|&pid| !alive(pid) && self.release(pid).is_ok())
            .collect()
    }
}

fn mkdir(dir: &Path) -> Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(Error::Mkdir {
            path: dir.into(),
            source,
        }),
    }
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|source| Error::Write {
        path: path.into(),
        value: value.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake cgroup tree: the mount points and the files the kernel would show in them.
    struct FakeCgroupFs {
        root: tempfile::TempDir,
    }

    impl FakeCgroupFs {
        fn new(files: &[(&str, &str)]) -> FakeCgroupFs {
            let root = tempfile::tempdir().unwrap();
            for (path, content) in files {
                let path = root.path().join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, content).unwrap();
            }
            FakeCgroupFs { root }
        }

        fn path(&self, p: &str) -> PathBuf {
            self.root.path().join(p)
        }

        fn read(&self, p: &str) -> String {
            std::fs::read_to_string(self.path(p)).unwrap()
        }

        /// The kernel drops a cgroup's files with its directory; the fake needs it done.
        fn empty(&self, dir: &str) {
            for e in std::fs::read_dir(self.path(dir)).unwrap().flatten() {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
    }

    const HYBRID: &str = "\
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0
";

    #[test]
    fn the_v1_cpu_mount_is_taken_if_writable_else_none() {
        let fs = FakeCgroupFs::new(&[]);
        assert_eq!(
            Hierarchy::find(HYBRID, fs.root.path()),
            Some(Hierarchy {
                version: Version::V1,
                parent: fs.path("sys/fs/cgroup/cpu,cpuacct/gns3-qemud"),
                cpu: true,
            })
        );
        let cpuacct_only = "cgroup /sys/fs/cgroup/cpuacct cgroup rw,cpuacct 0 0\n";
        assert_eq!(Hierarchy::find(cpuacct_only, fs.root.path()), None);
        let read_only = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup ro,nosuid,cpu,cpuacct 0 0\n";
        assert_eq!(Hierarchy::find(read_only, fs.root.path()), None);
        // Root makes no cgroup on v2: there the daemon's unit has them.
        assert_eq!(Hierarchy::find(UNIFIED_MOUNTS, fs.root.path()), None);
    }

    const UNIFIED_MOUNTS: &str = "\
cgroup2 /sys/fs/cgroup cgroup2 ro,nosuid,nodev,noexec 0 0
cgroup2 /sys/fs/cgroup/system.slice/gns3-qemud.service cgroup2 rw,nosuid 0 0
";
    const UNIT: &str = "sys/fs/cgroup/system.slice/gns3-qemud.service";

    fn unit_fs(controllers: &str) -> FakeCgroupFs {
        FakeCgroupFs::new(&[
            (&format!("{UNIT}/cgroup.procs"), "1"),
            (&format!("{UNIT}/cgroup.controllers"), controllers),
            (&format!("{UNIT}/cgroup.subtree_control"), ""),
        ])
    }

    #[test]
    fn a_delegated_unit_is_found_and_hands_cpu_down_to_threaded_children() {
        let fs = unit_fs("cpu pids");
        let own = "0::/system.slice/gns3-qemud.service\n";
        let uid = nix::unistd::geteuid().as_raw();
        let h = Hierarchy::delegated_in(UNIFIED_MOUNTS, own, fs.root.path(), uid).unwrap();
        assert_eq!(h.parent, fs.path(UNIT));
        assert!(h.cpu);
        assert_eq!(fs.read(&format!("{UNIT}/cgroup.subtree_control")), "+cpu");
        h.limit(4242, 30, true).unwrap();
        let dir = format!("{UNIT}/qemu-4242");
        assert_eq!(fs.read(&format!("{dir}/cgroup.type")), "threaded");
        assert_eq!(fs.read(&format!("{dir}/cpu.max")), "30000 100000");
        assert_eq!(fs.read(&format!("{dir}/cgroup.procs")), "4242");
        // The kernel lists a threaded cgroup's threads; the process is found by them.
        std::fs::write(fs.path(&format!("{dir}/cgroup.threads")), "4242\n4243\n").unwrap();
        h.limit(4242, 250, false).unwrap();
        assert_eq!(fs.read(&format!("{dir}/cpu.max")), "250000 100000");
        h.limit(4242, 0, false).unwrap();
        assert_eq!(fs.read(&format!("{dir}/cpu.max")), "max 100000");
        fs.empty(&dir);
        h.release(4242).unwrap();
        assert!(!fs.path(&dir).exists());
        h.release(4242).unwrap();

        // Not delegated: another uid's, the root cgroup, or a hybrid host.
        assert_eq!(
            Hierarchy::delegated_in(UNIFIED_MOUNTS, own, fs.root.path(), uid + 1),
            None
        );
        assert_eq!(
            Hierarchy::delegated_in(UNIFIED_MOUNTS, "0::/\n", fs.root.path(), uid),
            None
        );
        assert_eq!(
            Hierarchy::delegated_in(HYBRID, own, fs.root.path(), uid),
            None
        );
    }

    #[test]
    fn a_unit_without_cpu_places_its_qemus_without_limits() {
        let fs = unit_fs("pids");
        let own = "0::/system.slice/gns3-qemud.service\n";
        let uid = nix::unistd::geteuid().as_raw();
        let h = Hierarchy::delegated_in(UNIFIED_MOUNTS, own, fs.root.path(), uid).unwrap();
        assert!(!h.cpu);
        assert_eq!(fs.read(&format!("{UNIT}/cgroup.subtree_control")), "");
        h.limit(7, 0, true).unwrap();
        assert_eq!(fs.read(&format!("{UNIT}/qemu-7/cgroup.procs")), "7");
        assert!(!fs.path(&format!("{UNIT}/qemu-7/cpu.max")).exists());
        std::fs::write(fs.path(&format!("{UNIT}/qemu-7/cgroup.threads")), "7\n").unwrap();
        assert!(matches!(h.limit(7, 40, false), Err(Error::NoCpuController)));
    }

    #[test]
    fn v1_writes_the_cfs_quota() {
        let fs = FakeCgroupFs::new(&[("sys/fs/cgroup/cpu,cpuacct/tasks", "")]);
        let h = Hierarchy::find(HYBRID, fs.root.path()).unwrap();
        h.limit(7, 5, true).unwrap();
        let dir = "sys/fs/cgroup/cpu,cpuacct/gns3-qemud/qemu-7";
        assert_eq!(fs.read(&format!("{dir}/cpu.cfs_period_us")), "100000");
        assert_eq!(fs.read(&format!("{dir}/cpu.cfs_quota_us")), "5000");
        assert_eq!(fs.read(&format!("{dir}/cgroup.procs")), "7");
        h.limit(7, 0, false).unwrap();
        assert_eq!(fs.read(&format!("{dir}/cpu.cfs_quota_us")), "-1");
        // No subtree_control in v1.
        assert!(!fs
            .path("sys/fs/cgroup/cpu,cpuacct/gns3-qemud/cgroup.subtree_control")
            .exists());
    }

    #[test]
    fn a_process_not_in_its_cgroup_is_moved_only_when_the_caller_pins_it() {
        let fs = FakeCgroupFs::new(&[("sys/fs/cgroup/cpu,cpuacct/tasks", "")]);
        let h = Hierarchy::find(HYBRID, fs.root.path()).unwrap();
        assert!(matches!(
            h.limit(9, 50, false),
            Err(Error::NotPlaced { pid: 9 })
        ));
        assert!(!h.parent().exists());
        // Placed with no limit, at start; limited later without a move.
        h.limit(9, 0, true).unwrap();
        assert_eq!(
            fs.read("sys/fs/cgroup/cpu,cpuacct/gns3-qemud/qemu-9/cpu.cfs_quota_us"),
            "-1"
        );
        assert!(h.holds(9));
        h.limit(9, 20, false).unwrap();
        assert_eq!(
            fs.read("sys/fs/cgroup/cpu,cpuacct/gns3-qemud/qemu-9/cpu.cfs_quota_us"),
            "20000"
        );
    }

    #[test]
    fn a_sweep_removes_the_cgroups_of_dead_processes_only() {
        let fs = FakeCgroupFs::new(&[("sys/fs/cgroup/cpu,cpuacct/tasks", "")]);
        let h = Hierarchy::find(HYBRID, fs.root.path()).unwrap();
        for pid in [10, 11] {
            h.limit(pid, 50, true).unwrap();
            fs.empty(&format!("sys/fs/cgroup/cpu,cpuacct/gns3-qemud/qemu-{pid}"));
        }
        std::fs::create_dir(h.parent().join("not-ours")).unwrap();
        assert_eq!(h.sweep(|pid| pid == 11), vec![10]);
        assert!(!h.dir(10).exists());
        assert!(h.dir(11).exists());
        assert!(h.parent().join("not-ours").exists());
    }

    #[test]
    fn a_failed_write_names_the_file() {
        let fs = FakeCgroupFs::new(&[("sys/fs/cgroup/cpu,cpuacct/tasks", "")]);
        let h = Hierarchy::find(HYBRID, fs.root.path()).unwrap();
        // A directory where the kernel has a file: the write fails as a real one would.
        std::fs::create_dir_all(h.dir(3).join("cpu.cfs_period_us")).unwrap();
        let e = h.limit(3, 10, true).unwrap_err();
        assert!(e.to_string().contains("qemu-3/cpu.cfs_period_us"), "{e}");
    }
}
