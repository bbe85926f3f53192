//! The VMs on disk: `<state-dir>/vms/<id>/vm.json`, written atomically (temp file, fsync,
//! rename, fsync of the directory), so a daemon killed at any moment finds either the old
//! record or the new one, never half of one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::model::Record;

const RECORD: &str = "vm.json";
const TMP_SUFFIX: &str = ".tmp";
const DELETING_PREFIX: &str = ".deleting-";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "no space left on the state directory {}: free some space there (or delete a VM), then try again",
        dir.display()
    )]
    Full { dir: PathBuf },
    #[error("{path} is not a valid VM record: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Clone, Debug)]
pub struct Store {
    vms: PathBuf,
}

impl Store {
    /// Opens the state directory, and sweeps what a killed daemon may have left: temp
    /// files, half-deleted and half-created VM directories.
    pub fn open(state_dir: &Path) -> Result<Store> {
        let vms = state_dir.join("vms");
        fs::create_dir_all(&vms).map_err(io_err(&vms))?;
        let store = Store { vms };
        store.sweep()?;
        Ok(store)
    }

    fn sweep(&self) -> Result<()> {
        for entry in fs::read_dir(&self.vms).map_err(io_err(&self.vms))? {
            let entry = entry.map_err(io_err(&self.vms))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let half_made = !path.join(RECORD).exists();
            if name.starts_with(DELETING_PREFIX) || half_made {
                tracing::info!(path = %path.display(), "removing an unfinished VM directory");
                remove_any(&path)?;
                continue;
            }
            if let Ok(files) = fs::read_dir(&path) {
                for f in files.flatten() {
                    if f.file_name().to_string_lossy().ends_with(TMP_SUFFIX) {
                        remove_any(&f.path())?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The state directory, which holds `vms/`.
    pub fn state_dir(&self) -> &Path {
        self.vms.parent().unwrap_or(&self.vms)
    }

    pub fn vm_dir(&self, id: &str) -> PathBuf {
        self.vms.join(id)
    }

    /// Every VM record, in id order, with the error of each that cannot be read.
    pub fn load_all(&self) -> Result<Vec<(PathBuf, Result<Record>)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.vms).map_err(io_err(&self.vms))? {
            let entry = entry.map_err(io_err(&self.vms))?;
            let path = entry.path().join(RECORD);
            out.push((path.clone(), read(&path)));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Makes the VM's directory and its first record; on failure nothing is left.
    pub fn create(&self, record: &Record) -> Result<()> {
        let dir = self.vm_dir(&record.id);
        fs::create_dir(&dir).map_err(|e| self.full(io_err(&dir)(e)))?;
        let written = self.save(record).and_then(|_| sync_dir(&self.vms));
        if written.is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
        written
    }

    /// Replaces the record atomically.
    pub fn save(&self, record: &Record) -> Result<()> {
        self.write(record).map_err(|e| self.full(e))
    }

    /// A full disk is for whoever runs the host to fix: the error names the directory to
    /// clean rather than a temp file that is gone by the time anyone reads it.
    fn full(&self, e: Error) -> Error {
        match &e {
            Error::Io { source, .. }
                if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) =>
            {
                Error::Full {
                    dir: self.state_dir().to_path_buf(),
                }
            }
            _ => e,
        }
    }

    fn write(&self, record: &Record) -> Result<()> {
        let dir = self.vm_dir(&record.id);
        let path = dir.join(RECORD);
        let tmp = dir.join(format!("{RECORD}{TMP_SUFFIX}"));
        let mut json = serde_json::to_vec_pretty(record).map_err(|source| Error::Corrupt {
            path: path.clone(),
            source,
        })?;
        json.push(b'\n');
        replace(&path, &tmp, &json)
    }

    /// Removes the VM's directory: renamed first, so a crash half-way leaves a name the
    /// next start recognises and finishes removing.
    pub fn delete(&self, id: &str) -> Result<()> {
        let dir = self.vm_dir(id);
        let doomed = self.vms.join(format!("{DELETING_PREFIX}{id}"));
        fs::rename(&dir, &doomed).map_err(io_err(&dir))?;
        sync_dir(&self.vms)?;
        remove_any(&doomed)
    }
}

/// Replaces the file `name` of `dir` atomically with `bytes`, through a temp file that the
/// next daemon's start never mistakes for the file itself.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    replace(
        &dir.join(name),
        &dir.join(format!("{name}{TMP_SUFFIX}")),
        bytes,
    )
}

/// Removes the file `path` for good (the removal synced), if it is there.
pub fn remove_synced(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
        Ok(()) => path.parent().map_or(Ok(()), sync_dir),
    }
}

fn replace(path: &Path, tmp: &Path, bytes: &[u8]) -> Result<()> {
    let written = (|| {
        let mut f = File::create(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })()
    .map_err(io_err(tmp));
    if let Err(e) = written {
        let _ = fs::remove_file(tmp);
        return Err(e);
    }
    fs::rename(tmp, path).map_err(io_err(path))?;
    path.parent().map_or(Ok(()), sync_dir)
}

fn read(path: &Path) -> Result<Record> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Corrupt {
        path: path.to_path_buf(),
        source,
    })
}

fn remove_any(path: &Path) -> Result<()> {
    let r = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match r {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Settings, Tunnel};

    fn record(id: &str) -> Record {
        Record {
            id: id.into(),
            project: "lab".into(),
            settings: Settings {
                name: format!("vm-{id}"),
                qemu_path: "/usr/bin/qemu-system-x86_64".into(),
                console_port: 5000,
                monitor_port: 5001,
                ..Settings::default()
            },
            tunnels: vec![Tunnel {
                adapter: 0,
                local_port: 10000,
                remote_host: "127.0.0.1".into(),
                remote_port: 10001,
                suspended: false,
            }],
            exit_status: 0,
            last_error: String::new(),
            image_formats: Default::default(),
        }
    }

    #[test]
    fn create_save_load_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut r = record("aa");
        store.create(&r).unwrap();
        assert!(store.create(&r).is_err(), "a second create of the same id");
        r.settings.ram = 512;
        store.save(&r).unwrap();
        let all = store.load_all().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].1.as_ref().unwrap(), &r);
        store.delete("aa").unwrap();
        assert!(store.load_all().unwrap().is_empty());
    }

    #[test]
    fn sweeps_what_a_crash_left() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create(&record("bb")).unwrap();
        let vms = dir.path().join("vms");
        fs::write(vms.join("bb/vm.json.tmp"), b"{half").unwrap();
        fs::create_dir(vms.join("cc")).unwrap(); // created, record never written
        fs::create_dir(vms.join(".deleting-dd")).unwrap();
        let store = Store::open(dir.path()).unwrap();
        let names: Vec<_> = fs::read_dir(&vms)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["bb"]);
        assert!(!vms.join("bb/vm.json.tmp").exists());
        assert_eq!(store.load_all().unwrap().len(), 1);
    }

    #[test]
    fn a_full_disk_names_the_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let e = store.full(io_err(Path::new("/x/vm.json.tmp"))(
                io::Error::from_raw_os_error(errno),
            ));
            let text = e.to_string();
            assert!(matches!(e, Error::Full { .. }), "{e:?}");
            assert!(text.contains(&dir.path().display().to_string()), "{text}");
            assert!(!text.contains("vm.json.tmp"), "{text}");
        }
        let other = store.full(io_err(Path::new("/x"))(io::Error::from_raw_os_error(
            libc::EACCES,
        )));
        assert!(matches!(other, Error::Io { .. }));
    }

    #[test]
    fn a_corrupt_record_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create(&record("ee")).unwrap();
        fs::write(dir.path().join("vms/ee/vm.json"), b"{}").unwrap();
        let all = store.load_all().unwrap();
        assert!(matches!(all[0].1, Err(Error::Corrupt { .. })));
    }
}
