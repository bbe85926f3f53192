//! ResizeDisk: a disk grown, never shrunk (a guest's partitions and filesystems end where
//! the disk ended; cutting them is for the guest's own tools). Offline the file QEMU is
//! given is grown with `qemu-img resize`; on a running or paused VM QEMU grows it
//! (`block_resize`) and tells the guest, which sees the new size at once on virtio, and on
//! the other interfaces once it looks again (a rescan, a reboot). Nothing is kept in the
//! record: the size is the file's, and ResetDisks brings back the base's.

use serde_json::{json, Value};
use std::path::Path;

use super::drives::{Disk, DISKS};
use super::error::{shown, Error, Result};
use super::qemu::{Qemu, QMP_TIMEOUT};
use crate::model::Settings;

/// The largest size a disk may be grown to: 16 TiB, far beyond any lab, well inside qcow2's.
pub const MAX_SIZE: u64 = 16 << 40;
const SECTOR: u64 = 512;

/// The disk a client names: `hda` … `hdd`.
pub fn disk_named(name: &str) -> Result<Disk> {
    DISKS
        .into_iter()
        .find(|d| d.id().strip_prefix("gns3-") == Some(name))
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "'{}' is not a disk's name: give one of hda, hdb, hdc, hdd",
                shown(name)
            ))
        })
}

fn name_of(disk: Disk) -> &'static str {
    disk.id().trim_start_matches("gns3-")
}

/// What can be told before the disk's size is known: the VM has the disk, and `bytes` is
/// a size a disk may have.
pub fn check_request(vm: &str, s: &Settings, disk: Disk, bytes: u64) -> Result<()> {
    if !disk.exists(s) {
        return Err(Error::InvalidArgument(format!(
            "VM '{vm}' has no {} (its {} is ''): set {} to a base image first",
            name_of(disk),
            disk.key(),
            disk.key()
        )));
    }
    if bytes > MAX_SIZE {
        return Err(Error::InvalidArgument(format!(
            "{bytes} bytes is more than a disk may be grown to, 16 TiB ({MAX_SIZE} bytes): ask for less"
        )));
    }
    if !bytes.is_multiple_of(SECTOR) {
        return Err(Error::InvalidArgument(format!(
            "{bytes} bytes is not a whole number of 512-byte sectors: give a multiple of 512, such as {}",
            bytes.div_ceil(SECTOR) * SECTOR
        )));
    }
    Ok(())
}

/// Refuses a size that does not grow the disk, naming the one it has.
pub fn check_growth(vm: &str, disk: Disk, current: u64, bytes: u64) -> Result<()> {
    if bytes <= current {
        return Err(Error::InvalidArgument(format!(
            "{} of VM '{vm}' is {current} bytes already, and a disk only grows: give more than {current} bytes",
            name_of(disk)
        )));
    }
    Ok(())
}

/// The virtual size of an image file, as `qemu-img info` reads it in `format`.
pub async fn file_size(qemu_img: &Path, file: &Path, format: &str) -> Result<u64> {
    let file_str = file.to_string_lossy();
    let args = ["info", "--output=json", "-f", format, &file_str];
    let info = super::disks::run(qemu_img, &args).await?;
    serde_json::from_slice::<Value>(&info)
        .ok()
        .and_then(|v| v["virtual-size"].as_u64())
        .ok_or_else(|| {
            Error::DiskImageFailed(format!(
                "qemu-img info gives no virtual size for {}",
                file.display()
            ))
        })
}

/// Grows a qcow2 file of a stopped VM to `bytes`.
pub async fn grow_file(qemu_img: &Path, file: &Path, format: &str, bytes: u64) -> Result<()> {
    let (file_str, size) = (file.to_string_lossy(), bytes.to_string());
    let args = ["resize", "-q", "-f", format, &file_str, &size];
    super::disks::run(qemu_img, &args).await.map(drop)
}

/// The size of drive `id` in what `query-block` answers.
fn size_in(blocks: &Value, id: &str) -> Option<u64> {
    blocks
        .as_array()?
        .iter()
        .find(|b| b["device"] == id)?
        .get("inserted")?["image"]["virtual-size"]
        .as_u64()
}

impl Qemu {
    /// The size of `disk` as the running QEMU has it.
    pub async fn disk_size(&mut self, disk: Disk) -> Result<u64> {
        let blocks = self.qmp.execute("query-block", None, QMP_TIMEOUT).await?;
        size_in(&blocks, disk.id()).ok_or_else(|| {
            Error::Internal(format!("QEMU's query-block does not list {}", disk.id()))
        })
    }

    /// Grows `disk` to `bytes`: its file, and the disk the guest sees.
    pub async fn grow(&mut self, disk: Disk, bytes: u64) -> Result<()> {
        let args = json!({ "device": disk.id(), "size": bytes });
        self.qmp
            .execute("block_resize", Some(args), QMP_TIMEOUT)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_are_named_hda_to_hdd() {
        assert_eq!(disk_named("hda").unwrap(), Disk::Hda);
        assert_eq!(disk_named("hdd").unwrap(), Disk::Hdd);
        for bad in ["hde", "HDA", "gns3-hda", "", "cdrom"] {
            let e = disk_named(bad).unwrap_err().to_string();
            assert_eq!(
                e,
                format!("'{bad}' is not a disk's name: give one of hda, hdb, hdc, hdd")
            );
        }
    }

    #[test]
    fn a_request_names_a_disk_the_vm_has_and_a_sane_size() {
        let mut s = Settings::default();
        assert!(check_request("a", &s, Disk::Hda, 1 << 30).is_ok());
        let e = check_request("a", &s, Disk::Hdb, 1 << 30).unwrap_err();
        assert_eq!(
            e.to_string(),
            "VM 'a' has no hdb (its HdbDiskImage is ''): set HdbDiskImage to a base image first"
        );
        s.hdb_disk_image = "/i/b.qcow2".into();
        assert!(check_request("a", &s, Disk::Hdb, MAX_SIZE).is_ok());
        let e = check_request("a", &s, Disk::Hdb, MAX_SIZE + 512).unwrap_err();
        assert!(
            e.to_string().contains("16 TiB (17592186044416 bytes)"),
            "{e}"
        );
        let e = check_request("a", &s, Disk::Hda, 1000).unwrap_err();
        assert!(e.to_string().contains("such as 1024"), "{e}");
    }

    #[test]
    fn a_disk_only_grows() {
        assert!(check_growth("a", Disk::Hda, 1024, 1536).is_ok());
        for smaller in [512, 1024] {
            let e = check_growth("a", Disk::Hda, 1024, smaller).unwrap_err();
            assert_eq!(
                e.to_string(),
                "hda of VM 'a' is 1024 bytes already, and a disk only grows: give more than 1024 bytes"
            );
        }
    }

    #[test]
    fn the_size_of_a_drive_is_read_from_query_block() {
        let blocks = json!([
            { "device": "gns3-cdrom", "removable": true },
            { "device": "gns3-hda", "inserted": { "image": { "virtual-size": 134217728 } } },
        ]);
        assert_eq!(size_in(&blocks, "gns3-hda"), Some(134217728));
        assert_eq!(size_in(&blocks, "gns3-cdrom"), None);
        assert_eq!(size_in(&blocks, "gns3-hdb"), None);
    }

    /// Needs qemu-img, which the test command installs.
    #[tokio::test]
    async fn a_stopped_vms_disk_file_grows() {
        let dir = tempfile::tempdir().unwrap();
        let img = super::super::paths::which("qemu-img".as_ref()).expect("qemu-img");
        let file = dir.path().join("hda.qcow2");
        let f = file.to_string_lossy();
        super::super::disks::run(&img, &["create", "-q", "-f", "qcow2", &f, "1M"])
            .await
            .unwrap();
        assert_eq!(file_size(&img, &file, "qcow2").await.unwrap(), 1 << 20);
        grow_file(&img, &file, "qcow2", 3 << 20).await.unwrap();
        assert_eq!(file_size(&img, &file, "qcow2").await.unwrap(), 3 << 20);
    }
}
