//! The VM's disks: qcow2 linked clones of the base images (or a blank flash disk), made
//! once with `qemu-img` in the VM's directory and kept from start to start.

use std::path::{Path, PathBuf};
use tokio::process::Command;

use super::cmdline::{hda_overlay, hdb_overlay};
use super::error::{Error, Result};
use super::settings::{which, Settings};

const FLASH_SIZE: &str = "128M";

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

async fn run(qemu_img: &Path, args: &[&str]) -> Result<Vec<u8>> {
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

/// The format qemu-img sees in `image` (raw, qcow2, vmdk, ...).
async fn format_of(qemu_img: &Path, image: &str) -> Result<String> {
    // --force-share: the base is typically open, read-only, under other running VMs.
    let out = run(qemu_img, &["info", "--force-share", "--output=json", image]).await?;
    let info: serde_json::Value = serde_json::from_slice(&out).map_err(|e| {
        Error::DiskImageFailed(format!("qemu-img info gave no JSON for {image}: {e}"))
    })?;
    info.get("format")
        .and_then(|f| f.as_str())
        .map(str::to_string)
        .ok_or_else(|| Error::DiskImageFailed(format!("qemu-img info names no format for {image}")))
}

/// Makes `dest` unless it exists, through a temporary file so a crash never leaves half a
/// disk: a linked clone of `base` (with its format), or a blank flash disk.
async fn create(qemu_img: &Path, dest: &Path, base: Option<&str>) -> Result<()> {
    if dest.exists() {
        return Ok(());
    }
    let tmp = dest.with_extension("qcow2.tmp");
    let tmp_str = tmp.to_string_lossy();
    let format;
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    match base {
        Some(base) => {
            format = format_of(qemu_img, base).await?;
            args.extend(["-b", base, "-F", &format, &tmp_str]);
        }
        None => args.extend([&*tmp_str, FLASH_SIZE]),
    }
    let made = run(qemu_img, &args).await.and_then(|_| {
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
    made
}

/// Makes the overlays `Start` hands to QEMU (see `cmdline`).
pub async fn prepare(vm_dir: &Path, s: &Settings) -> Result<()> {
    let img = qemu_img(&s.qemu_path)?;
    let hda_base = Some(s.hda_disk_image.as_str()).filter(|b| !b.is_empty());
    create(&img, &hda_overlay(vm_dir, s), hda_base).await?;
    if !s.hdb_disk_image.is_empty() {
        create(&img, &hdb_overlay(vm_dir), Some(&s.hdb_disk_image)).await?;
    }
    Ok(())
}

/// Forgets the overlay of a base image that changed: it was a clone of the old one.
pub fn forget(vm_dir: &Path, old: &Settings, new: &Settings) -> std::io::Result<()> {
    let gone = |p: PathBuf| match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    };
    if old.hda_disk_image != new.hda_disk_image {
        gone(hda_overlay(vm_dir, old))?;
    }
    if old.hdb_disk_image != new.hdb_disk_image {
        gone(hdb_overlay(vm_dir))?;
    }
    Ok(())
}
