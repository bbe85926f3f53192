//! Base images, checked before a VM uses one: qemu-img says what each would make QEMU open
//! besides itself (its backing chain, an external data file, a VMDK's extents), and a base
//! that opens anything is let through only if all those files, and the base, lie under the
//! daemon's `image_dirs`. json: and protocol names (nbd:, http:, file:, …) never are. The
//! format qemu-img finds at first use is kept in the VM's record and given from then on.
//!
//! Without this, an appliance image whose backing file is another VM's overlay, or any
//! file the daemon can read, would be shown to the guest.

mod vet;
mod vetted;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::disks::{qemu_img, run};
use super::drives::DISKS;
use super::error::{Error, Result};
use crate::model::Settings;
use vet::{alone, canonical, parse, vet, Dirs, Info};
pub use vetted::Vetted;

/// Path -> format of the base images of a VM (`Record::image_formats`).
pub type Formats = BTreeMap<String, String>;

/// The base image settings of `s`, by name.
fn images(s: &Settings) -> [(&'static str, &str); 4] {
    DISKS.map(|d| (d.key(), d.image(s)))
}

/// The formats of the base images of `s`, each checked (`inspect`): every one at Start
/// (`old` None); at CreateVM and Configure (`old`: the settings before) only those that
/// change, the others keeping what is known of them. Only the bases of `s` are in the
/// result, so a record whose image changes forgets the old one's format. The bases are
/// inspected at once, each unless `vetted` knows it unchanged since its last check.
pub async fn check(
    s: &Settings,
    old: Option<&Settings>,
    known: &Formats,
    image_dirs: &[PathBuf],
    vetted: &Vetted,
) -> Result<Formats> {
    let dirs = Dirs::new(image_dirs);
    let mut formats = Formats::new();
    let mut inspections = Vec::new();
    for (key, base) in images(s) {
        if base.is_empty() || formats.contains_key(base) {
            continue;
        }
        let stored = known.get(base);
        // Used in place from now on: checked again, with the format it keeps.
        let unchanged = old.is_some_and(|o| {
            images(o).contains(&(key, base)) && (s.linked_clone || !o.linked_clone)
        });
        match stored {
            Some(format) if unchanged => {
                formats.insert(base.to_string(), format.clone());
            }
            // Never used yet: its first Start checks it.
            None if unchanged => {}
            _ => {
                if !s.linked_clone {
                    writable(key, base)?;
                }
                // A placeholder, so a base given twice is inspected once.
                formats.insert(base.to_string(), String::new());
                let img = qemu_img(&s.qemu_path)?;
                let stored = stored.map(String::as_str);
                let (dirs, in_place) = (&dirs, !s.linked_clone);
                inspections.push(async move {
                    let format = inspect(&img, key, base, stored, in_place, dirs, vetted).await?;
                    Ok::<_, Error>((base, format))
                });
            }
        }
    }
    for (base, format) in futures_util::future::try_join_all(inspections).await? {
        formats.insert(base.to_string(), format);
    }
    Ok(formats)
}

/// A base used in place is written by QEMU, as the daemon's user: refused now rather than
/// by QEMU at Start.
fn writable(key: &str, base: &str) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(base)
        .map(drop)
        .map_err(|e| {
            Error::ImageNotAccessible(format!(
                "{key} '{base}' would be written in place (LinkedClone false), and the daemon \
                 cannot open it for writing ({e}); make it writable by the daemon's user, or \
                 set LinkedClone to true"
            ))
        })
}

/// Checks `base`, the value of setting `key`, and returns its format: `stored` if the VM
/// has used it before (refused if qemu-img now finds another), else what qemu-img finds.
/// A base used `in_place` is never probed again once its format is known: its guest
/// writes to it, and a raw disk whose guest wrote a qcow2 header must stay raw.
async fn inspect(
    qemu_img: &Path,
    key: &str,
    base: &str,
    stored: Option<&str>,
    in_place: bool,
    dirs: &Dirs,
    vetted: &Vetted,
) -> Result<String> {
    let since = std::time::SystemTime::now();
    // A base used in place changes as its guest writes: read with its pinned format, and
    // not kept (its files change at every run).
    let pinned = stored.filter(|_| in_place);
    let format = match vetted.get(base).filter(|_| !in_place) {
        Some(format) => format,
        None => {
            let (format, chain) = inspect_files(qemu_img, key, base, pinned, dirs).await?;
            if !in_place {
                vetted.keep(base, &format, &chain, since);
            }
            format
        }
    };
    if let Some(stored) = stored.filter(|s| *s != format) {
        return Err(Error::ImageNotAccessible(format!(
            "{key} '{base}' was {stored} when this VM first used it, and qemu-img now finds \
             {format}: its content was replaced. Put the {stored} image back, or set {key} to '' \
             and then to '{base}' again to use it as {format} (this discards the VM's changes \
             to that disk)"
        )));
    }
    Ok(format)
}

/// What qemu-img finds of `base` (read as `pinned` if given): its format and, if every file it opens passes `vet`, the
/// chain of those files.
async fn inspect_files(
    qemu_img: &Path,
    key: &str,
    base: &str,
    pinned: Option<&str>,
    dirs: &Dirs,
) -> Result<(String, Vec<Info>)> {
    // One image at a time first: without --backing-chain qemu-img opens no backing file,
    // so nothing is opened before the image that names it has passed.
    let mut image = info(qemu_img, base, pinned, false).await?.remove(0);
    let format = image.format.clone();
    let mut seen = vec![canonical(key, base, base)?];
    let mut is_base = true;
    loop {
        vet(key, base, &image, is_base, dirs)?;
        let Some(next) = image.full_backing_filename.clone() else {
            break;
        };
        let at = canonical(key, base, &next)?;
        if seen.contains(&at) {
            return Err(Error::ImageNotAccessible(format!(
                "{key} '{base}': its backing chain comes back to '{next}', a loop QEMU cannot \
                 open. Give {}",
                alone(base)
            )));
        }
        seen.push(at);
        image = info(
            qemu_img,
            &next,
            image.backing_filename_format.as_deref(),
            false,
        )
        .await?
        .remove(0);
        is_base = false;
    }
    // The whole chain as qemu-img follows it with the base's format given, which is how
    // QEMU opens it through the overlay (made with -F): the files checked above.
    let chain = info(qemu_img, base, Some(&format), true).await?;
    for (i, image) in chain.iter().enumerate() {
        vet(key, base, image, i == 0, dirs)?;
    }
    Ok((format, chain))
}

/// `qemu-img info` of `image`, its format given or probed; with `chain`, of its backing
/// chain too (`--backing-chain`), `image` first.
async fn info(
    qemu_img: &Path,
    image: &str,
    format: Option<&str>,
    chain: bool,
) -> Result<Vec<Info>> {
    // --force-share: the base is typically open, read-only, under other running VMs.
    let mut args = vec!["info", "--force-share", "--output=json"];
    if let Some(format) = format {
        args.extend(["-f", format]);
    }
    if chain {
        args.push("--backing-chain");
    }
    args.push(image);
    let out = run(qemu_img, &args).await?;
    let infos = parse(&out, chain).map_err(|e| {
        Error::DiskImageFailed(format!(
            "qemu-img info of {image} gave JSON the daemon cannot read: {e}"
        ))
    })?;
    if infos.is_empty() {
        return Err(Error::DiskImageFailed(format!(
            "qemu-img info of {image} described no image"
        )));
    }
    Ok(infos)
}

/// These need qemu-img, which the test command installs.
#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn qemu_img(args: &[&str], at: &Path) {
        let out = Command::new("qemu-img")
            .args(args)
            .current_dir(at)
            .output()
            .expect("qemu-img (qemu-utils)");
        assert!(out.status.success(), "qemu-img {args:?}: {out:?}");
    }

    /// `images/` with `base.qcow2`, and `app.qcow2` on it (a relative backing name).
    fn images() -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let images = root.path().join("images");
        std::fs::create_dir(&images).unwrap();
        qemu_img(
            &["create", "-q", "-f", "qcow2", "base.qcow2", "1M"],
            &images,
        );
        qemu_img(
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                "base.qcow2",
                "-F",
                "qcow2",
                "app.qcow2",
            ],
            &images,
        );
        (root, images)
    }

    fn settings(hda: &Path, hdb: &str) -> Settings {
        Settings {
            qemu_path: "/usr/bin/qemu-system-x86_64".into(),
            hda_disk_image: hda.to_str().unwrap().into(),
            hdb_disk_image: hdb.into(),
            ..Settings::default()
        }
    }

    /// `check` by a daemon that has checked nothing before.
    async fn fresh(
        s: &Settings,
        old: Option<&Settings>,
        known: &Formats,
        dirs: &[PathBuf],
    ) -> Result<Formats> {
        check(s, old, known, dirs, &Vetted::default()).await
    }

    fn refused(r: Result<Formats>) -> String {
        match r {
            Err(Error::ImageNotAccessible(why)) => why,
            other => panic!("{other:?}"),
        }
    }

    fn formats(pairs: &[(&Path, &str)]) -> Formats {
        pairs
            .iter()
            .map(|(p, f)| (p.to_str().unwrap().to_string(), f.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn a_chain_passes_only_under_image_dirs_and_its_format_is_kept() {
        let (_root, images) = images();
        let (app, base) = (images.join("app.qcow2"), images.join("base.qcow2"));
        let none = Formats::new();
        let why = refused(fresh(&settings(&app, ""), None, &none, &[]).await);
        assert!(
            why.contains("would make QEMU open its backing file, '")
                && why.contains("(none are set)"),
            "{why}"
        );
        let dirs = [images.clone()];
        let found = fresh(&settings(&app, ""), None, &none, &dirs)
            .await
            .unwrap();
        assert_eq!(found, formats(&[(&app, "qcow2")]));
        // The same file as both disks has one format.
        let both = settings(&base, base.to_str().unwrap());
        assert_eq!(
            fresh(&both, None, &none, &[]).await.unwrap(),
            formats(&[(&base, "qcow2")])
        );
    }

    #[tokio::test]
    async fn a_base_of_another_format_than_the_stored_one_is_refused() {
        let (_root, images) = images();
        let base = images.join("base.qcow2");
        let b = base.to_str().unwrap();
        let stored = formats(&[(&base, "raw")]);
        let why = refused(fresh(&settings(&base, ""), None, &stored, &[]).await);
        assert_eq!(
            why,
            format!(
                "HdaDiskImage '{b}' was raw when this VM first used it, and qemu-img now finds \
                 qcow2: its content was replaced. Put the raw image back, or set HdaDiskImage \
                 to '' and then to '{b}' again to use it as qcow2 (this discards the VM's \
                 changes to that disk)"
            )
        );
    }

    /// A raw base used in place whose guest wrote a qcow2 magic at its start stays raw; the
    /// same file as a linked clone's base is probed, and so refused.
    #[tokio::test]
    async fn a_base_in_place_keeps_its_pinned_format() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        let mut content = b"QFI\xfb\0\0\0\x03".to_vec();
        content.resize(1 << 20, 0);
        std::fs::write(&raw, content).unwrap();
        let mut s = settings(&raw, "");
        let stored = formats(&[(&raw, "raw")]);
        s.linked_clone = false;
        assert_eq!(fresh(&s, None, &stored, &[]).await.unwrap(), stored);
        s.linked_clone = true;
        assert!(fresh(&s, None, &stored, &[]).await.is_err());
        // Switching to in place checks the base again, with its pinned format.
        let old = s.clone();
        s.linked_clone = false;
        assert_eq!(fresh(&s, Some(&old), &stored, &[]).await.unwrap(), stored);
    }

    /// Configure and CreateVM check only what changes; the result holds only the current
    /// bases, so an image set anew forgets its old format.
    #[tokio::test]
    async fn only_a_changed_base_is_checked_and_an_old_one_forgotten() {
        let (_root, images) = images();
        let (app, base) = (images.join("app.qcow2"), images.join("base.qcow2"));
        let old = settings(&base, "");
        // A format qemu-img would not find: kept as it is, so no qemu-img ran for it.
        let known = formats(&[(&base, "vmdk")]);
        let new = settings(&base, base.to_str().unwrap());
        assert_eq!(fresh(&new, Some(&old), &known, &[]).await.unwrap(), known);
        let new = settings(&app, "");
        let dirs = [images.clone()];
        assert_eq!(
            fresh(&new, Some(&old), &known, &dirs).await.unwrap(),
            formats(&[(&app, "qcow2")])
        );
        // Unchanged and never used: left to its first Start.
        assert_eq!(
            fresh(&old, Some(&old), &Formats::new(), &[]).await.unwrap(),
            Formats::new()
        );
        // At Start every base is checked against its stored format.
        let why = refused(fresh(&old, None, &known, &[]).await);
        assert!(why.contains("was vmdk when this VM first used it"), "{why}");
    }

    /// The chain is walked one image at a time, so a bad name deeper down is refused before
    /// qemu-img opens it (an nbd: name would otherwise make it connect), and a loop is seen.
    #[tokio::test]
    async fn the_walk_refuses_deeper_names_and_loops() {
        let (_root, images) = images();
        let dirs = [images.clone()];
        let i = |n: &str| images.join(n).to_str().unwrap().to_string();
        qemu_img(
            &[
                "rebase",
                "-u",
                "-f",
                "qcow2",
                "-b",
                "nbd:127.0.0.1:9",
                "-F",
                "raw",
                "base.qcow2",
            ],
            &images,
        );
        let app = images.join("app.qcow2");
        let why = refused(fresh(&settings(&app, ""), None, &Formats::new(), &dirs).await);
        assert!(
            why.contains(&format!(
                "would make QEMU open the backing file of '{}' named 'nbd:127.0.0.1:9', which \
                 names the nbd protocol",
                i("base.qcow2")
            )),
            "{why}"
        );
        qemu_img(
            &[
                "rebase",
                "-u",
                "-f",
                "qcow2",
                "-b",
                "app.qcow2",
                "-F",
                "qcow2",
                "base.qcow2",
            ],
            &images,
        );
        let why = refused(fresh(&settings(&app, ""), None, &Formats::new(), &dirs).await);
        assert!(
            why.contains(&format!(
                "its backing chain comes back to '{}', a loop",
                i("app.qcow2")
            )),
            "{why}"
        );
    }
}
