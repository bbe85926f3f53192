//! What the state directory keeps of the host's boots: the kernel's boot id at the daemon's
//! last start after a boot (`boot-id`), which tells a start after a boot of the host from a
//! mere restart of the daemon, and the VMs that ran when the host last shut down
//! (`restore.json`), for `restore_on_boot`. Both written atomically, as VM records are.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::store;

/// The kernel's id of this boot. systemd-nspawn gives each boot of a container one of its
/// own, mounted over this file.
pub const KERNEL_BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

const BOOT_ID: &str = "boot-id";
const RESTORE: &str = "restore.json";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the boot id from {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("'{0}' is not a boot id (32 hex digits, dashes allowed)")]
    NotAnId(String),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("cannot write {path}: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// A boot id as 32 lowercase hex digits: the kernel writes it with dashes, systemd's `%b`
/// without.
pub fn normalize(id: &str) -> Result<String, Error> {
    let hex: String = id.trim().chars().filter(|c| *c != '-').collect();
    if hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err(Error::NotAnId(crate::vm::error::shown(id)))
    }
}

/// The id of the boot the daemon runs in, as the kernel tells it.
pub fn kernel_boot_id() -> Result<String, Error> {
    let text = fs::read_to_string(KERNEL_BOOT_ID).map_err(|source| Error::Read {
        path: KERNEL_BOOT_ID.into(),
        source,
    })?;
    normalize(&text)
}

/// The boot files of one state directory.
#[derive(Clone, Debug)]
pub struct Boots {
    dir: PathBuf,
}

impl Boots {
    pub fn new(state_dir: &Path) -> Boots {
        Boots {
            dir: state_dir.to_path_buf(),
        }
    }

    /// Whether the boot `now` is another than the one the daemon last started VMs for: a
    /// `boot-id` that is absent or unreadable counts as another (starting VMs again is safe:
    /// a Start of a running VM does nothing).
    pub fn is_new(&self, now: &str) -> bool {
        let path = self.dir.join(BOOT_ID);
        match fs::read_to_string(&path) {
            Ok(text) => match normalize(&text) {
                Ok(stored) => stored != now,
                Err(e) => {
                    tracing::warn!(path = %path.display(), "{e}; taking this start for one after a boot");
                    true
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read it ({e}); taking this start for one after a boot");
                true
            }
        }
    }

    /// Keeps `id` as the boot whose VMs have been started.
    pub fn store(&self, id: &str) -> Result<(), Error> {
        Ok(store::write_atomic(
            &self.dir,
            BOOT_ID,
            format!("{id}\n").as_bytes(),
        )?)
    }

    /// The ids of the VMs that ran at the host's last shutdown; none when nothing was kept
    /// (or what was kept cannot be read: logged).
    pub fn running_at_shutdown(&self) -> Vec<String> {
        let path = self.dir.join(RESTORE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                tracing::error!(path = %path.display(), "cannot read the VMs to restore: {e}");
                return Vec::new();
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(path = %path.display(), "the VMs to restore cannot be read: {e}");
                Vec::new()
            }
        }
    }

    /// Keeps `ids` as the VMs to start again at the next boot.
    pub fn keep_running(&self, ids: &[String]) -> Result<(), Error> {
        let mut json = serde_json::to_vec_pretty(ids).map_err(|source| Error::Encode {
            path: self.dir.join(RESTORE),
            source,
        })?;
        json.push(b'\n');
        Ok(store::write_atomic(&self.dir, RESTORE, &json)?)
    }

    /// Forgets the VMs to restore: once restored, or when restore_on_boot is off.
    pub fn forget_running(&self) -> Result<(), Error> {
        Ok(store::remove_synced(&self.dir.join(RESTORE))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_ids_read_the_same_with_or_without_dashes() {
        let kernel = "3F2504E0-4F89-11D3-9A0C-0305E82C3301\n";
        let systemd = "3f2504e04f8911d39a0c0305e82c3301";
        assert_eq!(normalize(kernel).unwrap(), systemd);
        assert_eq!(normalize(systemd).unwrap(), systemd);
        for bad in [
            "",
            "3f2504e04f8911d39a0c0305e82c330",
            "3f2504e04f8911d39a0c0305e82c330x",
        ] {
            let e = normalize(bad).unwrap_err().to_string();
            assert_eq!(
                e,
                format!("'{bad}' is not a boot id (32 hex digits, dashes allowed)")
            );
        }
    }

    #[test]
    fn the_kernel_gives_a_boot_id() {
        let id = kernel_boot_id().unwrap();
        assert_eq!(id.len(), 32, "{id}");
        assert_eq!(kernel_boot_id().unwrap(), id, "the same all through a boot");
    }

    #[test]
    fn a_boot_is_new_until_stored_and_a_bad_file_counts_as_new() {
        let dir = tempfile::tempdir().unwrap();
        let boots = Boots::new(dir.path());
        let (a, b) = ("a".repeat(32), "b".repeat(32));
        assert!(boots.is_new(&a), "nothing stored");
        boots.store(&a).unwrap();
        assert!(!boots.is_new(&a));
        assert!(boots.is_new(&b));
        assert_eq!(
            fs::read_to_string(dir.path().join(BOOT_ID)).unwrap(),
            format!("{a}\n")
        );
        assert!(!dir.path().join("boot-id.tmp").exists());
        fs::write(dir.path().join(BOOT_ID), "half").unwrap();
        assert!(boots.is_new(&a));
    }

    #[test]
    fn the_vms_to_restore_are_kept_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let boots = Boots::new(dir.path());
        assert!(boots.running_at_shutdown().is_empty());
        let ids = vec!["aa".to_string(), "bb".to_string()];
        boots.keep_running(&ids).unwrap();
        assert_eq!(boots.running_at_shutdown(), ids);
        boots.forget_running().unwrap();
        assert!(boots.running_at_shutdown().is_empty());
        boots.forget_running().unwrap();
        fs::write(dir.path().join(RESTORE), "[\"aa\"").unwrap();
        assert!(boots.running_at_shutdown().is_empty(), "unreadable: none");
    }
}
