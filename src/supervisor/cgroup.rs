//! CPU limits through the kernel's cpu controller. Each limited QEMU gets a cgroup of its
//! own, `gns3-qemud/qemu-<pid>`, at the top of the hierarchy that has the cpu controller:
//! cgroup v2's `cpu.max` where v2 has it, else v1's `cpu.cfs_quota_us` (hybrid hosts, and
//! this project's CI, keep cpu on v1). The directory goes once the process has exited.
//!
//! Every path starts at a `root` (`/` on a real host), so the tests below run the same code
//! against a fake tree in a temp dir.

use std::io;
use std::path::{Path, PathBuf};

use super::error::{Error, Result};

/// The directory, under the hierarchy's root, that holds one cgroup per limited process.
const PARENT: &str = "gns3-qemud";
/// The CFS period: quotas are percent × 1 ms.
const PERIOD_US: u64 = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    pub version: Version,
    /// Where the hierarchy is mounted (under `root`).
    pub mount: PathBuf,
}

impl Hierarchy {
    /// The hierarchy of this host that has the cpu controller, if any.
    pub fn detect() -> Option<Hierarchy> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
        Self::find(&mounts, Path::new("/"))
    }

    /// The hierarchy with the cpu controller among `mounts` (the format of
    /// /proc/self/mounts), v2 first; paths are taken under `root`. A read-only mount is
    /// passed over: containers (systemd-nspawn on cgroup v1) show the host's cpu controller
    /// read-only, and cpulimit still works there.
    pub fn find(mounts: &str, root: &Path) -> Option<Hierarchy> {
        let entries: Vec<(&str, &str, &str)> = mounts
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (_, dir, fstype, options) = (f.next()?, f.next()?, f.next()?, f.next()?);
                let writable = !options.split(',').any(|o| o == "ro");
                writable.then_some((dir, fstype, options))
            })
            .collect();
        let under_root = |dir: &str| root.join(dir.trim_start_matches('/'));
        let v2 = entries.iter().find_map(|&(dir, fstype, _)| {
            let mount = under_root(dir);
            let controllers = std::fs::read_to_string(mount.join("cgroup.controllers")).ok()?;
            (fstype == "cgroup2" && controllers.split_whitespace().any(|c| c == "cpu")).then_some(
                Hierarchy {
                    version: Version::V2,
                    mount,
                },
            )
        });
        v2.or_else(|| {
            entries.iter().find_map(|&(dir, fstype, options)| {
                (fstype == "cgroup" && options.split(',').any(|o| o == "cpu")).then(|| Hierarchy {
                    version: Version::V1,
                    mount: under_root(dir),
                })
            })
        })
    }

    pub fn parent(&self) -> PathBuf {
        self.mount.join(PARENT)
    }

    /// The cgroup of process `pid`.
    pub fn dir(&self, pid: u32) -> PathBuf {
        self.parent().join(format!("qemu-{pid}"))
    }

    /// Limits process `pid` to `percent` of one CPU, moving it into its own cgroup first if
    /// it is not there yet; 0 lifts the limit.
    pub fn limit(&self, pid: u32, percent: u32) -> Result<()> {
        let dir = self.dir(pid);
        if percent == 0 && !dir.exists() {
            return Ok(());
        }
        let fresh = !dir.exists();
        let result = self
            .create(&dir)
            .and_then(|()| self.set(&dir, pid, percent));
        if result.is_err() && fresh {
            // Nothing half-made stays: a cgroup that never got its process goes again.
            let _ = std::fs::remove_dir(&dir);
        }
        result
    }

    fn set(&self, dir: &Path, pid: u32, percent: u32) -> Result<()> {
        let quota = (percent > 0).then(|| u64::from(percent) * PERIOD_US / 100);
        match self.version {
            Version::V2 => {
                let max = quota.map_or("max".to_string(), |q| q.to_string());
                write(&dir.join("cpu.max"), &format!("{max} {PERIOD_US}"))?;
            }
            Version::V1 => {
                write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                let quota = quota.map_or("-1".to_string(), |q| q.to_string());
                write(&dir.join("cpu.cfs_quota_us"), &quota)?;
            }
        }
        // Writing a pid to cgroup.procs moves all its threads, in v1 as in v2.
        write(&dir.join("cgroup.procs"), &pid.to_string())
    }

    fn create(&self, dir: &Path) -> Result<()> {
        let parent = self.parent();
        if self.version == Version::V2 {
            // v2 hands a controller down one level at a time; a cgroup that hands it down
            // may hold no process, which `gns3-qemud` never does.
            enable_cpu(&self.mount)?;
            mkdir(&parent)?;
            enable_cpu(&parent)?;
        } else {
            mkdir(&parent)?;
        }
        mkdir(dir)
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

fn enable_cpu(dir: &Path) -> Result<()> {
    let path = dir.join("cgroup.subtree_control");
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current.split_whitespace().any(|c| c == "cpu") {
        return Ok(());
    }
    write(&path, "+cpu")
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
    fn v2_is_taken_where_it_has_cpu_else_the_v1_cpu_mount_else_none() {
        let v2 = FakeCgroupFs::new(&[(
            "sys/fs/cgroup/cgroup.controllers",
            "cpuset cpu io memory pids",
        )]);
        let mounts = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\nproc /proc proc rw 0 0\n";
        assert_eq!(
            Hierarchy::find(mounts, v2.root.path()),
            Some(Hierarchy {
                version: Version::V2,
                mount: v2.path("sys/fs/cgroup")
            })
        );
        // This project's CI: a v2 mount without cpu, cpu on v1.
        let hybrid = FakeCgroupFs::new(&[("sys/fs/cgroup/unified/cgroup.controllers", "hugetlb")]);
        assert_eq!(
            Hierarchy::find(HYBRID, hybrid.root.path()),
            Some(Hierarchy {
                version: Version::V1,
                mount: hybrid.path("sys/fs/cgroup/cpu,cpuacct")
            })
        );
        let cpuacct_only = "cgroup /sys/fs/cgroup/cpuacct cgroup rw,cpuacct 0 0\n";
        assert_eq!(Hierarchy::find(cpuacct_only, hybrid.root.path()), None);
        let read_only = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup ro,nosuid,cpu,cpuacct 0 0\n";
        assert_eq!(Hierarchy::find(read_only, hybrid.root.path()), None);
        let read_only_v2 = "cgroup2 /sys/fs/cgroup cgroup2 ro,nosuid 0 0\n";
        assert_eq!(Hierarchy::find(read_only_v2, v2.root.path()), None);
    }

    #[test]
    fn v2_hands_cpu_down_and_writes_cpu_max() {
        let fs = FakeCgroupFs::new(&[
            ("sys/fs/cgroup/cgroup.controllers", "cpu memory"),
            ("sys/fs/cgroup/cgroup.subtree_control", "memory"),
        ]);
        let h = Hierarchy::find("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0", fs.root.path()).unwrap();
        h.limit(4242, 30).unwrap();
        assert_eq!(fs.read("sys/fs/cgroup/cgroup.subtree_control"), "+cpu");
        assert_eq!(
            fs.read("sys/fs/cgroup/gns3-qemud/cgroup.subtree_control"),
            "+cpu"
        );
        let dir = "sys/fs/cgroup/gns3-qemud/qemu-4242";
        assert_eq!(fs.read(&format!("{dir}/cpu.max")), "30000 100000");
        assert_eq!(fs.read(&format!("{dir}/cgroup.procs")), "4242");
        // More than one CPU, then no limit: the cgroup stays until the process exits.
        h.limit(4242, 250).unwrap();
        assert_eq!(fs.read(&format!("{dir}/cpu.max")), "250000 100000");
        h.limit(4242, 0).unwrap();
        assert_eq!(fs.read(&format!("{dir}/cpu.max")), "max 100000");
        fs.empty(dir);
        h.release(4242).unwrap();
        assert!(!fs.path(dir).exists());
        h.release(4242).unwrap();
    }

    #[test]
    fn v1_writes_the_cfs_quota() {
        let fs = FakeCgroupFs::new(&[("sys/fs/cgroup/unified/cgroup.controllers", "")]);
        let h = Hierarchy::find(HYBRID, fs.root.path()).unwrap();
        std::fs::create_dir_all(&h.mount).unwrap();
        h.limit(7, 5).unwrap();
        let dir = "sys/fs/cgroup/cpu,cpuacct/gns3-qemud/qemu-7";
        assert_eq!(fs.read(&format!("{dir}/cpu.cfs_period_us")), "100000");
        assert_eq!(fs.read(&format!("{dir}/cpu.cfs_quota_us")), "5000");
        assert_eq!(fs.read(&format!("{dir}/cgroup.procs")), "7");
        h.limit(7, 0).unwrap();
        assert_eq!(fs.read(&format!("{dir}/cpu.cfs_quota_us")), "-1");
        // No subtree_control in v1.
        assert!(!fs
            .path("sys/fs/cgroup/cpu,cpuacct/gns3-qemud/cgroup.subtree_control")
            .exists());
    }

    #[test]
    fn no_limit_on_an_unlimited_process_creates_nothing() {
        let fs = FakeCgroupFs::new(&[("sys/fs/cgroup/cgroup.controllers", "cpu")]);
        let h = Hierarchy::find("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0", fs.root.path()).unwrap();
        h.limit(9, 0).unwrap();
        assert!(!h.parent().exists());
    }

    #[test]
    fn a_sweep_removes_the_cgroups_of_dead_processes_only() {
        let fs = FakeCgroupFs::new(&[("sys/fs/cgroup/cgroup.controllers", "cpu")]);
        let h = Hierarchy::find("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0", fs.root.path()).unwrap();
        for pid in [10, 11] {
            h.limit(pid, 50).unwrap();
            fs.empty(&format!("sys/fs/cgroup/gns3-qemud/qemu-{pid}"));
        }
        std::fs::create_dir(h.parent().join("not-ours")).unwrap();
        assert_eq!(h.sweep(|pid| pid == 11), vec![10]);
        assert!(!h.dir(10).exists());
        assert!(h.dir(11).exists());
        assert!(h.parent().join("not-ours").exists());
    }

    #[test]
    fn a_failed_write_names_the_file() {
        let fs = FakeCgroupFs::new(&[("sys/fs/cgroup/cgroup.controllers", "cpu")]);
        let h = Hierarchy::find("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0", fs.root.path()).unwrap();
        // A directory where the kernel has a file: the write fails as a real one would.
        std::fs::create_dir_all(h.dir(3).join("cpu.max")).unwrap();
        let e = h.limit(3, 10).unwrap_err();
        assert!(e.to_string().contains("qemu-3/cpu.max"), "{e}");
    }
}
