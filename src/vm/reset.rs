//! ResetDisks: a stopped VM back to its initial state. Its own files go (the overlay of each
//! disk, the blank flash disk, the UEFI variables, the TPM state) and Start makes each again
//! when it finds it missing (`disks::prepare`, `firmware::prepare`, swtpm); settings, ports
//! and tunnels stay. Each removal alone leaves a VM that starts, so a daemon killed in the
//! middle leaves a VM half reset, never broken: ResetDisks again finishes it.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::drives::DISKS;
use super::error::{Error, Result};
use super::{firmware, tpm};
use crate::model::Settings;

/// What ResetDisks removes, in the order it does: the TPM state, the UEFI variables, then
/// the disks the VM has (their overlays, or the blank flash disk). The one place that
/// decides which files are the VM's own: a base image is never one.
pub fn own_files(vm_dir: &Path, s: &Settings) -> Vec<PathBuf> {
    let mut files = vec![vm_dir.join(tpm::STATE_DIR), firmware::vars(vm_dir)];
    files.extend(DISKS.into_iter().filter_map(|d| d.own_file(vm_dir, s)));
    files
}

/// Removes the VM's own files (`own_files`); those already gone are passed over.
pub fn remove_own(vm_dir: &Path, s: &Settings) -> Result<()> {
    for path in own_files(vm_dir, s) {
        let removed = if path.is_dir() {
            remove_tpm_state(&path)
        } else {
            gone(std::fs::remove_file(&path))
        };
        removed.map_err(|e| {
            Error::DiskImageFailed(format!("cannot remove {}: {e}", path.display()))
        })?;
    }
    Ok(())
}

fn gone(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Empties and removes swtpm's state dir, its permanent state (`*.permall`) last: the
/// volatile and suspend states swtpm may keep beside it go first, so a dir left half
/// emptied holds the permanent state alone (a TPM after a power cycle) or nothing (a new
/// TPM, which swtpm makes in an empty dir as at the first start).
fn remove_tpm_state(dir: &Path) -> std::io::Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.sort_by_key(|p| p.extension().is_some_and(|x| x == "permall"));
    for f in files {
        gone(std::fs::remove_file(f))?;
    }
    gone(std::fs::remove_dir(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_files_are_the_overlays_of_the_disks_it_has_the_vars_and_the_tpm() {
        let dir = Path::new("/vms/ab");
        let mut s = Settings::default();
        let names = |s: &Settings| -> Vec<String> {
            own_files(dir, s)
                .iter()
                .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(names(&s), ["tpm", "efivars.qcow2", "flash.qcow2"]);
        s.hda_disk_image = "/i/a.qcow2".into();
        s.hdc_disk_image = "/i/c.qcow2".into();
        assert_eq!(
            names(&s),
            ["tpm", "efivars.qcow2", "hda_disk.qcow2", "hdc_disk.qcow2"]
        );
        // Bases used in place are the user's files, never the VM's own.
        s.linked_clone = false;
        assert_eq!(names(&s), ["tpm", "efivars.qcow2"]);
    }

    #[test]
    fn the_own_files_go_and_the_rest_stays() {
        let dir = tempfile::tempdir().unwrap();
        let vm = dir.path();
        let s = Settings {
            hda_disk_image: vm.join("base.qcow2").to_string_lossy().into_owned(),
            ..Settings::default()
        };
        for f in [
            "base.qcow2",
            "vm.json",
            "qemu.log",
            "hda_disk.qcow2",
            "efivars.qcow2",
        ] {
            std::fs::write(vm.join(f), b"x").unwrap();
        }
        std::fs::create_dir(vm.join("tpm")).unwrap();
        for f in ["tpm2-00.permall", "tpm2-00.volatilestate", ".lock"] {
            std::fs::write(vm.join("tpm").join(f), b"x").unwrap();
        }
        remove_own(vm, &s).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(vm)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["base.qcow2", "qemu.log", "vm.json"]);
        // Again, with nothing left to remove.
        remove_own(vm, &s).unwrap();
    }

    #[test]
    fn the_permanent_tpm_state_goes_last() {
        let dir = tempfile::tempdir().unwrap();
        let tpm = dir.path().join("tpm");
        std::fs::create_dir(&tpm).unwrap();
        for f in [
            "tpm2-00.permall",
            "tpm2-00.volatilestate",
            "tpm2-00.savestate",
        ] {
            std::fs::write(tpm.join(f), b"x").unwrap();
        }
        // A file that cannot go stops the removal: with the permanent state still there.
        std::fs::create_dir(tpm.join("z-not-a-file")).unwrap();
        assert!(remove_tpm_state(&tpm).is_err());
        let left: Vec<String> = std::fs::read_dir(&tpm)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(left.contains(&"tpm2-00.permall".to_string()), "{left:?}");
        std::fs::remove_dir(tpm.join("z-not-a-file")).unwrap();
        remove_tpm_state(&tpm).unwrap();
        assert!(!tpm.exists());
    }
}
