//! The VM's disks: qcow2 linked clones of the base images (written by `qcow2`, or made with
//! `qemu-img` for a base of another format than raw and qcow2), or a blank
//! flash disk written here; made once in the VM's directory and kept from start to start.
//! The bases are checked first, and their formats found, by `bases`.

use std::path::{Path, PathBuf};
use tokio::process::Command;

use super::bases::Formats;
use super::drives::{Disk, DISKS};
use super::error::{Error, Result};
use super::paths::which;
use super::qcow2;
use crate::model::Settings;

/// The size of the blank flash disk of a VM without a first base image.
pub const FLASH_SIZE: u64 = 128 << 20;

/// `qemu-img` beside the QEMU binary (a QEMU built into a prefix ships both), else in PATH.
pub fn qemu_img(qemu_path: &str) -> Result<PathBuf> {
    let beside = Path::new(qemu_path).with_file_name("qemu-img");
    if beside.is_file() {
        return Ok(beside);
    }
    which("qemu-img".as_ref()).ok_or_else(|| {
        Error::DiskImageFailed(format!(
            "qemu-img is neither beside {qemu_path} nor in PATH; install it (Debian: qemu-utils)"
        ))
    })
}

pub(super) async fn run(qemu_img: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new(qemu_img)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::DiskImageFailed(format!("cannot run {}: {e}", qemu_img.display())))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        return Err(Error::DiskImageFailed(format!(
            "qemu-img {} failed: {}",
            args.first().copied().unwrap_or(""),
            msg.trim()
        )));
    }
    Ok(out.stdout)
}

/// Makes `dest` unless it exists, through a temporary file so a crash never leaves half a
/// disk: a linked clone of `base` (path, format), or a blank flash disk. Whether it made it.
async fn create(qemu_img: &Path, dest: &Path, base: Option<(&str, &str)>) -> Result<bool> {
    // Disks are renamed into place without an fsync (as qemu-img leaves them): after a power
    // loss one may be there but empty. Nothing was ever written to it; make it again.
    if std::fs::metadata(dest).is_ok_and(|m| m.len() == 0) {
        tracing::warn!(disk = %dest.display(), "making again an empty disk");
        std::fs::remove_file(dest).map_err(|e| {
            Error::DiskImageFailed(format!("cannot remove {}: {e}", dest.display()))
        })?;
    }
    if dest.exists() {
        match qcow2::backing_file(dest) {
            Ok(backing) if backing.as_deref() == base.map(|(b, _)| b.as_bytes()) => {
                return Ok(false)
            }
            // A clone of another base: the daemon died between saving the VM's new base
            // and forgetting the old clone (`forget`).
            Ok(_) => {
                tracing::warn!(disk = %dest.display(), "forgetting a clone of a base image the VM no longer has");
                std::fs::remove_file(dest).map_err(|e| {
                    Error::DiskImageFailed(format!("cannot remove {}: {e}", dest.display()))
                })?;
            }
            Err(e) => {
                return Err(Error::DiskImageFailed(format!(
                    "cannot read the qcow2 header of {}: {e}",
                    dest.display()
                )))
            }
        }
    }
    let tmp = dest.with_extension("qcow2.tmp");
    let write = |image: Vec<u8>| {
        std::fs::write(&tmp, image)
            .map_err(|e| Error::DiskImageFailed(format!("cannot write {}: {e}", tmp.display())))
    };
    let made = match base {
        // The same file as `qemu-img create -f qcow2 <dest> 128M`, without a process.
        None => write(qcow2::blank(FLASH_SIZE)),
        // Also written here unless only qemu-img can read the base's size: a process less.
        Some((base, format)) => match qcow2::virtual_size(base.as_ref(), format)
            .and_then(|size| qcow2::overlay(size, base, format))
        {
            Some(image) => write(image),
            None => {
                let tmp = tmp.to_string_lossy();
                let args = [
                    "create", "-q", "-f", "qcow2", "-b", base, "-F", format, &tmp,
                ];
                run(qemu_img, &args).await.map(drop)
            }
        },
    };
    let made = made.and_then(|()| {
        std::fs::rename(&tmp, dest).map_err(|e| {
            Error::DiskImageFailed(format!(
                "cannot move the new disk to {}: {e}",
                dest.display()
            ))
        })
    });
    if made.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    made.map(|()| true)
}

/// Makes the overlays `Start` hands to QEMU (see `cmdline`), each on its base with the
/// format `bases::check` found for it; a base used in place has none. The files it made.
pub async fn prepare(vm_dir: &Path, s: &Settings, formats: &Formats) -> Result<Vec<PathBuf>> {
    let mut made = Vec::new();
    for disk in DISKS.into_iter().filter(|d| d.exists(s)) {
        let overlay = disk.overlay(vm_dir, s);
        if disk.in_place(s).is_some() {
            // A clone from before LinkedClone was false (the daemon died before `forget`):
            // never to be used again, as it does not hold what the guest wrote since.
            gone(overlay).map_err(|e| {
                Error::DiskImageFailed(format!("cannot remove an old linked clone: {e}"))
            })?;
            continue;
        }
        if prepare_one(vm_dir, s, formats, disk).await? {
            made.push(overlay);
        }
    }
    Ok(made)
}

/// Makes the overlay of one disk, as `prepare` does; whether it made it.
pub async fn prepare_one(
    vm_dir: &Path,
    s: &Settings,
    formats: &Formats,
    disk: Disk,
) -> Result<bool> {
    let img = qemu_img(&s.qemu_path)?;
    let base = with_format(formats, disk.image(s))?;
    create(&img, &disk.overlay(vm_dir, s), base).await
}

/// Removes `p`; already gone is fine.
fn gone(p: PathBuf) -> std::io::Result<()> {
    match std::fs::remove_file(&p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", p.display()),
        )),
        _ => Ok(()),
    }
}

/// A base image (None if unset) with its format.
pub fn with_format<'a>(formats: &'a Formats, base: &'a str) -> Result<Option<(&'a str, &'a str)>> {
    if base.is_empty() {
        return Ok(None);
    }
    let format = formats
        .get(base)
        .ok_or_else(|| Error::Internal(format!("no format was found for base image {base}")))?;
    Ok(Some((base, format)))
}

/// Forgets the overlay of a base image that changed: it was a clone of the old one; and
/// every linked clone when LinkedClone changes (the base in place went on without them,
/// or they were never made).
pub fn forget(vm_dir: &Path, old: &Settings, new: &Settings) -> std::io::Result<()> {
    let switched = old.linked_clone != new.linked_clone;
    for disk in DISKS {
        let has_base = !disk.image(old).is_empty();
        if disk.image(old) != disk.image(new) || (switched && has_base) {
            gone(disk.overlay(vm_dir, old))?;
        }
    }
    // Another firmware's variables (Secure Boot's keys, another boot order) are not these.
    if old.firmware != new.firmware {
        gone(super::firmware::vars(vm_dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switching_linked_clone_forgets_the_clones_but_not_the_flash_disk() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "hda_disk.qcow2",
            "hdb_disk.qcow2",
            "flash.qcow2",
            "efivars.qcow2",
        ] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let old = Settings {
            hdb_disk_image: "/i/b.qcow2".into(),
            ..Settings::default()
        };
        let new = Settings {
            linked_clone: false,
            ..old.clone()
        };
        forget(dir.path(), &old, &new).unwrap();
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["efivars.qcow2", "flash.qcow2", "hda_disk.qcow2"]);
    }

    #[tokio::test]
    async fn an_empty_disk_left_by_a_power_loss_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let flash = dir.path().join("flash.qcow2");
        std::fs::write(&flash, b"").unwrap();
        create(Path::new("/nonexistent/qemu-img"), &flash, None)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&flash).unwrap(), qcow2::blank(FLASH_SIZE));
    }

    /// Needs qemu-img, which the test command installs.
    #[tokio::test]
    async fn a_clone_of_another_base_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let img = which("qemu-img".as_ref()).expect("qemu-img (qemu-utils)");
        let [a, b] = ["a.qcow2", "b.qcow2"].map(|n| dir.path().join(n));
        for base in [&a, &b] {
            run(
                &img,
                &["create", "-q", "-f", "qcow2", &base.to_string_lossy(), "1M"],
            )
            .await
            .unwrap();
            assert_eq!(qcow2::backing_file(base).unwrap(), None);
        }
        let clone = dir.path().join("hda.qcow2");
        let (a, b) = (a.to_string_lossy(), b.to_string_lossy());
        create(&img, &clone, Some((&a, "qcow2"))).await.unwrap();
        assert_eq!(
            qcow2::backing_file(&clone).unwrap().as_deref(),
            Some(a.as_bytes())
        );
        create(&img, &clone, Some((&b, "qcow2"))).await.unwrap();
        assert_eq!(
            qcow2::backing_file(&clone).unwrap().as_deref(),
            Some(b.as_bytes())
        );
    }
}
