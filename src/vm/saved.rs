//! A stopped VM's saved state (OnStop save-state) on disk: the RAM and device state in an
//! image of its own, `saved-state.qcow2` in the VM's directory, and an internal snapshot
//! of the same tag in every writable drive. What makes it whole, what discards it, and
//! which drives can carry it.
//!
//! Whole means the tag is on every drive and on the state's image, with the VM state in
//! the latter: QEMU writes the VM state first and tags the drives after, so a save cut
//! short leaves some tags or none, which a daemon starting again removes.

use std::path::{Path, PathBuf};

use super::drives::DISKS;
use super::error::{Error, Result};
use super::firmware;
use super::snapshot_table;
use crate::model::{Firmware, OnStop, Settings};

/// The internal snapshot's name in every file of the state.
pub const TAG: &str = "gns3-saved";
/// The node name of the state's image while QEMU has it open.
pub const NODE: &str = "gns3-vmstate";
const FILE: &str = "saved-state.qcow2";
/// The state's image holds no disk: the VM state goes past the end of its (tiny) disk.
pub const FILE_SIZE: &str = "1M";

/// The settings a saved state depends on: a change to any of them discards it, as the
/// guest's RAM and devices would not fit the VM that would load them.
pub const DEPENDS_ON: &[&str] = &[
    "QemuPath",
    "Ram",
    "Cpus",
    "MaxCpus",
    "Adapters",
    "AdapterType",
    "CustomAdapters",
    "MacAddress",
    "HdaDiskImage",
    "HdbDiskImage",
    "HdcDiskImage",
    "HddDiskImage",
    "HdaDiskInterface",
    "HdbDiskInterface",
    "HdcDiskInterface",
    "HddDiskInterface",
    "LinkedClone",
    "MachineType",
    "Firmware",
    "BiosImage",
    "Tpm",
    "CpuModel",
    "Accelerator",
];

/// The first setting that differs between `old` and `new` and discards a saved state.
pub fn change_that_discards(old: &Settings, new: &Settings) -> Option<&'static str> {
    old.differing(new)
        .into_iter()
        .map(|row| row.key)
        .find(|key| DEPENDS_ON.contains(key))
}

/// The image of the VM state.
pub fn file(vm_dir: &Path) -> PathBuf {
    vm_dir.join(FILE)
}

/// A drive QEMU writes: the setting it comes from, its file and its format.
#[derive(Clone, Debug, PartialEq)]
pub struct Drive {
    pub key: &'static str,
    pub file: PathBuf,
    pub format: Option<String>,
}

/// The writable drives of a VM: its disks (linked clones, the flash disk or bases in
/// place) and a UEFI VM's variables. `formats` of the bases, for those used in place.
pub fn drives(vm_dir: &Path, s: &Settings, formats: &super::bases::Formats) -> Vec<Drive> {
    let disks = DISKS.into_iter().filter(|d| d.exists(s)).map(|d| {
        let (file, format) = match d.in_place(s) {
            Some(base) => (PathBuf::from(base), formats.get(base).cloned()),
            None => (d.overlay(vm_dir, s), Some("qcow2".to_string())),
        };
        Drive {
            key: d.key(),
            file,
            format,
        }
    });
    let vars = (s.firmware != Firmware::Bios).then(|| Drive {
        key: "Firmware",
        file: firmware::vars(vm_dir),
        format: Some("qcow2".into()),
    });
    disks.chain(vars).collect()
}

/// Refuses OnStop save-state on a VM with a writable drive that is not qcow2 (a base
/// used in place), which QEMU cannot snapshot.
pub fn check_drives(s: &Settings, formats: &super::bases::Formats) -> Result<()> {
    if s.on_stop != OnStop::SaveState {
        return Ok(());
    }
    for d in drives(Path::new(""), s, formats) {
        if let Some(format) = d.format.as_deref().filter(|f| *f != "qcow2") {
            return Err(Error::InvalidArgument(format!(
                "OnStop save-state needs every writable drive in qcow2, and {} '{}' is {format}, \
                 used in place (LinkedClone false); set LinkedClone to true, convert the image \
                 to qcow2, or choose another OnStop",
                d.key,
                d.file.display()
            )));
        }
    }
    Ok(())
}

/// What is on disk of a saved state.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    Absent,
    Whole,
    /// Left by a save cut short: the files that carry the tag, the state's image aside.
    Partial(Vec<PathBuf>),
}

fn tag_of(file: &Path) -> Option<snapshot_table::Snapshot> {
    snapshot_table::read(file)
        .ok()?
        .into_iter()
        .find(|s| s.name == TAG)
}

/// Judges the files of a saved state: `state`, the image of the VM state, and `drives`.
pub fn status(state: &Path, drives: &[PathBuf]) -> Status {
    let tagged: Vec<PathBuf> = drives
        .iter()
        .filter(|f| tag_of(f).is_some())
        .cloned()
        .collect();
    let vm_state = tag_of(state).is_some_and(|s| s.vm_state_size > 0);
    if vm_state && tagged.len() == drives.len() {
        Status::Whole
    } else if tagged.is_empty() && !state.exists() {
        Status::Absent
    } else {
        Status::Partial(tagged)
    }
}

/// Removes a saved state, whole or partial: the VM state's image first, so that what is
/// left at any moment is no whole state, then the tag from `tagged`, the drives that carry
/// it (as [`status`] found them).
pub async fn discard(qemu_img: &Path, state: &Path, tagged: &[PathBuf]) -> Result<()> {
    crate::store::remove_synced(state)
        .map_err(|e| Error::DiskImageFailed(format!("cannot remove the saved state: {e}")))?;
    for file in tagged {
        super::disks::run(qemu_img, &["snapshot", "-d", TAG, &file.to_string_lossy()]).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::settings::ROWS;
    use crate::vm::bases::Formats;

    #[test]
    fn every_setting_a_state_depends_on_is_one() {
        for key in DEPENDS_ON {
            assert!(ROWS.iter().any(|r| r.key == *key), "{key} is no setting");
        }
        let old = Settings::default();
        let mut new = old.clone();
        new.name = "b".into();
        new.kernel_command_line = "quiet".into();
        assert_eq!(change_that_discards(&old, &new), None);
        new.ram = 512;
        assert_eq!(change_that_discards(&old, &new), Some("Ram"));
        let mut new = old.clone();
        new.linked_clone = false;
        assert_eq!(change_that_discards(&old, &new), Some("LinkedClone"));
    }

    #[test]
    fn a_raw_drive_in_place_is_refused_by_name() {
        let mut s = Settings {
            hdb_disk_image: "/i/b.img".into(),
            linked_clone: false,
            on_stop: OnStop::SaveState,
            ..Settings::default()
        };
        let mut formats = Formats::new();
        formats.insert("/i/b.img".into(), "raw".into());
        let e = check_drives(&s, &formats).unwrap_err().to_string();
        assert!(e.contains("HdbDiskImage '/i/b.img' is raw"), "{e}");
        formats.insert("/i/b.img".into(), "qcow2".into());
        check_drives(&s, &formats).unwrap();
        formats.insert("/i/b.img".into(), "raw".into());
        s.linked_clone = true;
        check_drives(&s, &formats).unwrap();
        s.linked_clone = false;
        s.on_stop = OnStop::Shutdown;
        check_drives(&s, &formats).unwrap();
    }

    #[test]
    fn the_drives_of_a_vm() {
        let s = Settings {
            hdb_disk_image: "/i/b.qcow2".into(),
            firmware: Firmware::Uefi,
            ..Settings::default()
        };
        let files: Vec<(&str, PathBuf)> = drives(Path::new("/v"), &s, &Formats::new())
            .into_iter()
            .map(|d| (d.key, d.file))
            .collect();
        assert_eq!(
            files,
            [
                ("HdaDiskImage", PathBuf::from("/v/flash.qcow2")),
                ("HdbDiskImage", PathBuf::from("/v/hdb_disk.qcow2")),
                ("Firmware", PathBuf::from("/v/efivars.qcow2")),
            ]
        );
    }

    /// Against what qemu-img writes, which the test command installs.
    #[tokio::test]
    async fn whole_partial_absent_and_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let img = |name: &str| {
            let path = dir.path().join(name);
            let out = std::process::Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2"])
                .arg(&path)
                .arg("1M")
                .output()
                .unwrap();
            assert!(out.status.success());
            path
        };
        let tag = |path: &Path| {
            let out = std::process::Command::new("qemu-img")
                .args(["snapshot", "-c", TAG])
                .arg(path)
                .output()
                .unwrap();
            assert!(out.status.success());
        };
        let state = file(dir.path());
        let disks = [img("a.qcow2"), img("b.qcow2")];
        assert_eq!(status(&state, &disks), Status::Absent);
        tag(&disks[0]);
        assert_eq!(
            status(&state, &disks),
            Status::Partial(vec![disks[0].clone()])
        );
        tag(&disks[1]);
        img(FILE);
        // A state image without the VM state (qemu-img's snapshot has none) is no state.
        tag(&state);
        assert_eq!(status(&state, &disks), Status::Partial(disks.to_vec()));
        let qemu_img = PathBuf::from("qemu-img");
        discard(&qemu_img, &state, &disks).await.unwrap();
        assert!(!state.exists());
        assert_eq!(status(&state, &disks), Status::Absent);
        assert!(snapshot_table::read(&disks[0]).unwrap().is_empty());
    }
}
