//! The VM's own qcow2 files (its linked clones, its flash disk, a UEFI VM's variables) kept
//! sound with `qemu-img check`: at Start, leaked clusters are repaired and a corrupt file
//! stops the start; `RepairDisks` repairs a stopped VM's. Bases used in place are the
//! user's files and are left alone.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use tokio::process::Command;
use tokio::task::JoinSet;

use super::drives::DISKS;
use super::error::{Error, Result};
use super::firmware;
use crate::model::{Firmware, Settings};

/// The VM's own qcow2 files that exist now.
pub fn own_files(vm_dir: &Path, s: &Settings) -> Vec<PathBuf> {
    let disks = DISKS.into_iter().filter_map(|d| d.own_file(vm_dir, s));
    let vars = (s.firmware != Firmware::Bios).then(|| firmware::vars(vm_dir));
    disks.chain(vars).filter(|f| f.is_file()).collect()
}

/// What `qemu-img check --output=json` says of an image; counts it leaves out are 0.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", default)]
struct Report {
    leaks: u64,
    corruptions: u64,
    leaks_fixed: u64,
    corruptions_fixed: u64,
}

/// A check's result, from its exit status (qemu-img(1): 0 sound or repaired, 1 check not
/// completed, 2 corruptions, 3 only leaks) and its report.
#[derive(Debug, PartialEq)]
enum Found {
    /// Sound now; what the run repaired (leaks, corruptions).
    Sound(u64, u64),
    Leaks(u64),
    Corrupt(u64),
    /// The check could not be made: qemu-img's words.
    Failed(String),
}

fn judge(code: Option<i32>, stdout: &[u8], stderr: &[u8]) -> Found {
    let report: Report = serde_json::from_slice(stdout).unwrap_or_default();
    let words = || {
        let e = String::from_utf8_lossy(stderr);
        let e = e.trim();
        if e.is_empty() {
            format!("qemu-img check ended with status {code:?}")
        } else {
            e.to_string()
        }
    };
    match code {
        Some(0) => Found::Sound(report.leaks_fixed, report.corruptions_fixed),
        Some(2) => Found::Corrupt(report.corruptions.max(1)),
        Some(3) => Found::Leaks(report.leaks.max(1)),
        _ => Found::Failed(words()),
    }
}

/// `qemu-img check` of `file` as qcow2, repairing what `repair` says (leaks, all).
async fn check(qemu_img: &Path, file: &Path, repair: Option<&str>) -> Result<Found> {
    let mut cmd = Command::new(qemu_img);
    cmd.args(["check", "--output=json", "-f", "qcow2"]);
    if let Some(what) = repair {
        cmd.args(["-r", what]);
    }
    let out = cmd
        .arg(file)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::DiskImageFailed(format!("cannot run {}: {e}", qemu_img.display())))?;
    Ok(judge(out.status.code(), &out.stdout, &out.stderr))
}

/// Runs `job` on every file at once; the results in the order of `files`, or the first
/// file's error. Every job runs to its end: a repair killed halfway would leave its image
/// worse than it found it.
async fn each<F, Fut, T>(files: &[PathBuf], job: F) -> Result<Vec<T>>
where
    F: Fn(PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut set = JoinSet::new();
    for (i, file) in files.iter().enumerate() {
        let job = job(file.clone());
        set.spawn(async move { (i, job.await) });
    }
    let mut out: Vec<Option<Result<T>>> = files.iter().map(|_| None).collect();
    let mut lost = None;
    while let Some(done) = set.join_next().await {
        match done {
            Ok((i, result)) => out[i] = Some(result),
            Err(e) => {
                lost = Some(Error::Internal(format!(
                    "a qemu-img check task failed: {e}"
                )))
            }
        }
    }
    let out: Result<Vec<T>> = out.into_iter().flatten().collect();
    match lost {
        Some(e) => Err(e),
        None => out,
    }
}

/// At Start, before QEMU runs: every file checked, leaks repaired and logged, a corrupt
/// file refused (DiskImageFailed naming it and RepairDisks).
pub async fn check_at_start(qemu_img: &Path, vm: &str, files: &[PathBuf]) -> Result<()> {
    let img = qemu_img.to_path_buf();
    let vm = vm.to_string();
    each(files, |file| {
        let (img, vm) = (img.clone(), vm.clone());
        async move {
            match check(&img, &file, None).await? {
                Found::Sound(..) => Ok(()),
                Found::Leaks(n) => {
                    // Clusters a crash left allocated and unused: only space lost.
                    match check(&img, &file, Some("leaks")).await? {
                        Found::Sound(fixed, _) => {
                            tracing::warn!(vm_name = %vm, disk = %file.display(), leaks = n, fixed, "repaired leaked clusters of a disk");
                            Ok(())
                        }
                        other => Err(start_refusal(&vm, &file, other)),
                    }
                }
                other => Err(start_refusal(&vm, &file, other)),
            }
        }
    })
    .await
    .map(drop)
}

fn start_refusal(vm: &str, file: &Path, found: Found) -> Error {
    let file = file.display();
    Error::DiskImageFailed(match found {
        Found::Corrupt(n) | Found::Leaks(n) => format!(
            "disk {file} of VM '{vm}' is corrupt (qemu-img check counts {n} corruptions), so \
             the VM was not started; call RepairDisks() on the stopped VM to repair it \
             (qemu-img check -r all)"
        ),
        Found::Failed(words) => format!(
            "qemu-img cannot check disk {file} of VM '{vm}' ({words}), so the VM was not \
             started; call RepairDisks() on the stopped VM to try to repair it"
        ),
        Found::Sound(..) => format!("disk {file} of VM '{vm}' is sound"),
    })
}

/// RepairDisks: `qemu-img check -r all` of every file; the files in which something was
/// repaired. A file it cannot repair is DiskImageFailed naming it and what is left.
pub async fn repair(qemu_img: &Path, vm: &str, files: &[PathBuf]) -> Result<Vec<String>> {
    let img = qemu_img.to_path_buf();
    let vm = vm.to_string();
    let repaired = each(files, |file| {
        let (img, vm) = (img.clone(), vm.clone());
        async move {
            match check(&img, &file, Some("all")).await? {
                Found::Sound(0, 0) => Ok(None),
                Found::Sound(leaks, corruptions) => {
                    tracing::warn!(vm_name = %vm, disk = %file.display(), leaks, corruptions, "repaired a disk");
                    Ok(Some(file.to_string_lossy().into_owned()))
                }
                other => {
                    let why = match other {
                        Found::Failed(words) => words,
                        Found::Corrupt(n) | Found::Leaks(n) => {
                            format!("qemu-img check -r all leaves {n} errors")
                        }
                        Found::Sound(..) => String::new(),
                    };
                    Err(Error::DiskImageFailed(format!(
                        "disk {} of VM '{vm}' cannot be repaired ({why}); what is left: \
                         ResetDisks() starts the VM's own disks over from their bases (what the \
                         guest wrote is lost), or delete the VM and create it again",
                        file.display()
                    )))
                }
            }
        }
    })
    .await?;
    Ok(repaired.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vms_own_files_are_its_clones_flash_disk_and_uefi_variables() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "flash.qcow2",
            "hda_disk.qcow2",
            "hdb_disk.qcow2",
            "efivars.qcow2",
        ];
        for f in names {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let own = |s: &Settings| -> Vec<String> {
            own_files(dir.path(), s)
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        let mut s = Settings::default();
        assert_eq!(own(&s), ["flash.qcow2"]);
        s.hda_disk_image = "/i/a.raw".into();
        s.hdb_disk_image = "/i/b.raw".into();
        s.hdc_disk_image = "/i/c.raw".into();
        s.firmware = Firmware::Uefi;
        // hdc's clone is not made yet: nothing to check.
        assert_eq!(
            own(&s),
            ["hda_disk.qcow2", "hdb_disk.qcow2", "efivars.qcow2"]
        );
        s.linked_clone = false;
        assert_eq!(own(&s), ["efivars.qcow2"]);
        s.hda_disk_image.clear();
        assert_eq!(own(&s), ["flash.qcow2", "efivars.qcow2"]);
    }

    #[test]
    fn the_exit_status_and_report_say_what_was_found() {
        let leaks = br#"{"check-errors": 0, "leaks": 2, "filename": "a", "format": "qcow2"}"#;
        assert_eq!(judge(Some(3), leaks, b""), Found::Leaks(2));
        let fixed = br#"{"leaks-fixed": 2, "corruptions-fixed": 1}"#;
        assert_eq!(judge(Some(0), fixed, b""), Found::Sound(2, 1));
        assert_eq!(judge(Some(0), b"{}", b""), Found::Sound(0, 0));
        assert_eq!(
            judge(Some(2), br#"{"corruptions": 4}"#, b""),
            Found::Corrupt(4)
        );
        assert_eq!(
            judge(Some(1), b"", b"qemu-img: Could not open 'x'\n"),
            Found::Failed("qemu-img: Could not open 'x'".into())
        );
        assert_eq!(
            judge(None, b"", b""),
            Found::Failed("qemu-img check ended with status None".into())
        );
    }

    /// A qcow2 made by qemu-img (which the test command installs), damaged in its refcount
    /// block (the third cluster, 16-bit entries): a leak is repaired at Start; a cluster in
    /// use with refcount 0 is corruption, refused at Start and repaired by `repair`.
    #[tokio::test]
    async fn leaks_are_repaired_at_start_and_corruption_by_repair() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let img = super::super::paths::which("qemu-img".as_ref()).expect("qemu-img");
        let make = |name: &str| {
            let f = dir.path().join(name);
            let out = std::process::Command::new(&img)
                .args(["create", "-q", "-f", "qcow2"])
                .arg(&f)
                .arg("16M")
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            f
        };
        let refcount = |f: &Path, cluster: u64, n: u16| {
            let file = std::fs::OpenOptions::new().write(true).open(f).unwrap();
            file.write_all_at(&n.to_be_bytes(), 2 * 65536 + 2 * cluster)
                .unwrap();
        };
        let (sound, leaky, bad) = (make("a.qcow2"), make("b.qcow2"), make("c.qcow2"));
        // An unused fifth cluster counted as used.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&leaky)
            .unwrap()
            .set_len(5 * 65536)
            .unwrap();
        refcount(&leaky, 4, 1);
        assert_eq!(check(&img, &leaky, None).await.unwrap(), Found::Leaks(1));
        let files = [sound.clone(), leaky.clone()];
        check_at_start(&img, "r1", &files).await.unwrap();
        assert_eq!(check(&img, &leaky, None).await.unwrap(), Found::Sound(0, 0));
        // The L1 table (the fourth cluster) counted as free.
        refcount(&bad, 3, 0);
        let files = [sound.clone(), bad.clone()];
        let e = check_at_start(&img, "r1", &files).await.unwrap_err();
        assert!(matches!(e, Error::DiskImageFailed(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "disk {} of VM 'r1' is corrupt (qemu-img check counts 1 corruptions), so the \
                 VM was not started; call RepairDisks() on the stopped VM to repair it \
                 (qemu-img check -r all)",
                bad.display()
            )
        );
        let repaired = repair(&img, "r1", &files).await.unwrap();
        assert_eq!(repaired, [bad.to_string_lossy().into_owned()]);
        check_at_start(&img, "r1", &files).await.unwrap();
        assert!(repair(&img, "r1", &files).await.unwrap().is_empty());
        // What qemu-img cannot even open is left to ResetDisks.
        std::fs::write(&bad, b"not a qcow2").unwrap();
        let e = repair(&img, "r1", &files).await.unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "disk {} of VM 'r1' cannot be repaired (qemu-img: Could not open",
                bad.display()
            )) && e.ends_with("or delete the VM and create it again"),
            "{e}"
        );
    }
}
