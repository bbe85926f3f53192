//! The VM's disks: qcow2 linked clones of the base images made with `qemu-img`, or a blank
//! flash disk written here; made once in the VM's directory and kept from start to start.
//! The bases are checked first, and their formats found, by `bases`.

use std::path::{Path, PathBuf};
use tokio::process::Command;

use super::bases::Formats;
use super::drives::DISKS;
use super::error::{Error, Result};
use super::paths::which;
use crate::model::Settings;

const FLASH_SIZE: u64 = 128 << 20;

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
/// disk: a linked clone of `base` (path, format), or a blank flash disk.
async fn create(qemu_img: &Path, dest: &Path, base: Option<(&str, &str)>) -> Result<()> {
    // Disks are renamed into place without an fsync (as qemu-img leaves them): after a power
    // loss one may be there but empty. Nothing was ever written to it; make it again.
    if std::fs::metadata(dest).is_ok_and(|m| m.len() == 0) {
        tracing::warn!(disk = %dest.display(), "making again an empty disk");
        std::fs::remove_file(dest).map_err(|e| {
            Error::DiskImageFailed(format!("cannot remove {}: {e}", dest.display()))
        })?;
    }
    if dest.exists() {
        match backing_file(dest) {
            Ok(backing) if backing.as_deref() == base.map(|(b, _)| b.as_bytes()) => return Ok(()),
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
    let made = match base {
        Some((base, format)) => {
            let tmp = tmp.to_string_lossy();
            let args = [
                "create", "-q", "-f", "qcow2", "-b", base, "-F", format, &tmp,
            ];
            run(qemu_img, &args).await.map(drop)
        }
        // The same file as `qemu-img create -f qcow2 <dest> 128M`, without a process.
        None => std::fs::write(&tmp, blank_qcow2(FLASH_SIZE))
            .map_err(|e| Error::DiskImageFailed(format!("cannot write {}: {e}", tmp.display()))),
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
    made
}

/// An empty qcow2 (version 3) image of `size` bytes, laid out as qemu-img lays it out:
/// 64 KiB clusters; the header, the refcount table, one refcount block (16-bit refcounts),
/// then the L1 table; no L2 table and no data until the guest writes.
fn blank_qcow2(size: u64) -> Vec<u8> {
    const CLUSTER: u64 = 1 << 16;
    const L2_COVERS: u64 = CLUSTER * (CLUSTER / 8);
    let l1_entries = size.div_ceil(L2_COVERS);
    let l1_offset = 3 * CLUSTER;
    let clusters = 3 + (l1_entries * 8).div_ceil(CLUSTER);
    let mut f = vec![0u8; (l1_offset + l1_entries * 8) as usize];
    let mut put = |at: u64, bytes: &[u8]| {
        f[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    };
    put(0, b"QFI\xfb");
    put(4, &3u32.to_be_bytes()); // version
    put(20, &16u32.to_be_bytes()); // cluster_bits
    put(24, &size.to_be_bytes());
    put(36, &(l1_entries as u32).to_be_bytes());
    put(40, &l1_offset.to_be_bytes());
    put(48, &CLUSTER.to_be_bytes()); // refcount_table_offset
    put(56, &1u32.to_be_bytes()); // refcount_table_clusters
    put(96, &4u32.to_be_bytes()); // refcount_order: 16 bits
    put(100, &104u32.to_be_bytes()); // header_length; an end-of-extensions mark (0s) follows
    put(CLUSTER, &(2 * CLUSTER).to_be_bytes()); // the refcount block
    for c in 0..clusters {
        put(2 * CLUSTER + 2 * c, &1u16.to_be_bytes());
    }
    f
}

/// Where a qcow2 header (big-endian) says the backing file's name is: its offset (bytes 8..16)
/// and length (16..20); None without a backing file or for what is no qcow2.
fn backing_location(header: &[u8]) -> Option<(u64, usize)> {
    let field = |at: usize, n: usize| header.get(at..at + n);
    if field(0, 4)? != b"QFI\xfb" {
        return None;
    }
    let offset = u64::from_be_bytes(field(8, 8)?.try_into().ok()?);
    let len = u32::from_be_bytes(field(16, 4)?.try_into().ok()?);
    // The format caps the name at 1023 bytes.
    (offset != 0 && (1..1024).contains(&len)).then_some((offset, len as usize))
}

/// The base image an overlay of ours was made from.
fn backing_file(image: &Path) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(image)?;
    let mut header = [0u8; 20];
    f.read_exact(&mut header)?;
    let Some((offset, len)) = backing_location(&header) else {
        return Ok(None);
    };
    let mut name = vec![0u8; len];
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(&mut name)?;
    Ok(Some(name))
}

/// Makes the overlays `Start` hands to QEMU (see `cmdline`), each on its base with the
/// format `bases::check` found for it; a base used in place has none.
pub async fn prepare(vm_dir: &Path, s: &Settings, formats: &Formats) -> Result<()> {
    let img = qemu_img(&s.qemu_path)?;
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
        let base = with_format(formats, disk.image(s))?;
        create(&img, &overlay, base).await?;
    }
    Ok(())
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
fn with_format<'a>(formats: &'a Formats, base: &'a str) -> Result<Option<(&'a str, &'a str)>> {
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

    /// qemu-img (the test command installs it) finds the blank flash disk sound and of its
    /// size, and the way qemu-img itself makes it.
    #[tokio::test]
    async fn a_blank_flash_disk_is_a_sound_qcow2_of_128_mib() {
        let dir = tempfile::tempdir().unwrap();
        let img = which("qemu-img".as_ref()).expect("qemu-img (qemu-utils)");
        let ours = dir.path().join("ours.qcow2");
        std::fs::write(&ours, blank_qcow2(FLASH_SIZE)).unwrap();
        let theirs = dir.path().join("theirs.qcow2");
        let theirs_str = theirs.to_string_lossy();
        run(&img, &["create", "-q", "-f", "qcow2", &theirs_str, "128M"])
            .await
            .unwrap();
        for image in [&ours, &theirs] {
            let image = image.to_string_lossy();
            // `run` fails with qemu-img's words if check finds the image unsound.
            run(&img, &["check", &image]).await.unwrap();
            let info = run(&img, &["info", "--output=json", &image]).await.unwrap();
            let info: serde_json::Value = serde_json::from_slice(&info).unwrap();
            assert_eq!(info["virtual-size"], FLASH_SIZE, "{info}");
            assert_eq!(info["format"], "qcow2");
            assert_eq!(info["cluster-size"], 65536);
        }
        let len = |p: &Path| std::fs::metadata(p).unwrap().len();
        assert_eq!(len(&ours), len(&theirs));
        assert_eq!(backing_file(&ours).unwrap(), None);
    }

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
        assert_eq!(std::fs::read(&flash).unwrap(), blank_qcow2(FLASH_SIZE));
    }

    #[test]
    fn the_backing_file_is_read_from_the_qcow2_header() {
        let mut header = b"QFI\xfb\0\0\0\x03".to_vec();
        header.extend(0x1234u64.to_be_bytes());
        header.extend(17u32.to_be_bytes());
        assert_eq!(backing_location(&header), Some((0x1234, 17)));
        let mut none = header.clone();
        none[8..16].fill(0);
        assert_eq!(backing_location(&none), None);
        let mut raw = header.clone();
        raw[0] = b'X';
        assert_eq!(backing_location(&raw), None);
        assert_eq!(backing_location(&header[..12]), None);
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
            assert_eq!(backing_file(base).unwrap(), None);
        }
        let clone = dir.path().join("hda.qcow2");
        let (a, b) = (a.to_string_lossy(), b.to_string_lossy());
        create(&img, &clone, Some((&a, "qcow2"))).await.unwrap();
        assert_eq!(backing_file(&clone).unwrap().as_deref(), Some(a.as_bytes()));
        create(&img, &clone, Some((&b, "qcow2"))).await.unwrap();
        assert_eq!(backing_file(&clone).unwrap().as_deref(), Some(b.as_bytes()));
    }
}
