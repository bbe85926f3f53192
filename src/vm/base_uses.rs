//! Which VMs use which base image, and how: as the base of their linked clones (any number
//! of VMs at once: QEMU only reads it) or in place (LinkedClone false: the guest writes to
//! it, so no other VM may have it at all, or its writes would corrupt their clones). Kept
//! in the shared `Context`, taken and given back like names and ports (`claims`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use super::drives::DISKS;
use super::error::{Error, Result};
use crate::model::Settings;

/// How a VM uses a base image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    Clone,
    InPlace,
}

/// Canonical path of a base -> VM id -> how it uses it.
#[derive(Default, Debug)]
pub struct BaseUses(HashMap<PathBuf, BTreeMap<String, Use>>);

impl BaseUses {
    /// Another VM whose use of `path` excludes `how` by VM `id`: its id and its use.
    pub fn conflict(&self, path: &PathBuf, id: &str, how: Use) -> Option<(&str, Use)> {
        self.0
            .get(path)?
            .iter()
            .find(|(other, their)| {
                other.as_str() != id && (how == Use::InPlace || **their == Use::InPlace)
            })
            .map(|(other, their)| (other.as_str(), *their))
    }

    /// Records that `id` uses `path` as `how`; returns what it had before.
    pub fn set(&mut self, path: PathBuf, id: &str, how: Use) -> Option<Use> {
        self.0.entry(path).or_default().insert(id.to_string(), how)
    }

    /// Puts back what `id` had of `path` before a `set` (None: nothing).
    pub fn put_back(&mut self, path: &PathBuf, id: &str, before: Option<Use>) {
        match before {
            Some(how) => {
                self.set(path.clone(), id, how);
            }
            None => self.unset(path, id),
        }
    }

    pub fn unset(&mut self, path: &PathBuf, id: &str) {
        if let Some(users) = self.0.get_mut(path) {
            users.remove(id);
            if users.is_empty() {
                self.0.remove(path);
            }
        }
    }

    /// Everything VM `id` holds (it is deleted).
    pub fn release_all(&mut self, id: &str) {
        self.0.retain(|_, users| {
            users.remove(id);
            !users.is_empty()
        });
    }

    /// Whether `id` uses `path` as `how`.
    pub fn holds(&self, path: &PathBuf, id: &str, how: Use) -> bool {
        self.0.get(path).and_then(|u| u.get(id)) == Some(&how)
    }
}

/// The key of a base: its canonical path (a symlink or `..` names the same file), or the
/// path as given if it cannot be resolved now (it is refused at Start anyway).
pub fn key_of(base: &str) -> PathBuf {
    std::fs::canonicalize(base).unwrap_or_else(|_| PathBuf::from(base))
}

/// The bases of `s` by setting name, with their keys and how `s` uses them; a file used in
/// place twice (two disks on one file) is refused: QEMU cannot open it as two writable disks.
pub fn of(s: &Settings) -> Result<Vec<(&'static str, PathBuf, Use)>> {
    let how = if s.linked_clone {
        Use::Clone
    } else {
        Use::InPlace
    };
    let mut out: Vec<(&'static str, PathBuf, Use)> = Vec::new();
    for disk in DISKS {
        let base = disk.image(s);
        if base.is_empty() {
            continue;
        }
        let key = key_of(base);
        if let Some((first, _, _)) = out.iter().find(|(_, k, _)| *k == key) {
            if how == Use::InPlace {
                return Err(Error::ImageNotAccessible(format!(
                    "{} '{base}' is the same file as {first}, and with LinkedClone false a base \
                     image is one disk, written in place; give {} a copy of it, or set \
                     LinkedClone to true",
                    disk.key(),
                    disk.key()
                )));
            }
            continue;
        }
        out.push((disk.key(), key, how));
    }
    Ok(out)
}

/// The refusal of `how` of base `base` (setting `key`) because VM `holder` uses it as `theirs`.
pub fn refusal(key: &str, base: &str, how: Use, holder: &str, theirs: Use) -> Error {
    Error::ImageNotAccessible(match (how, theirs) {
        (_, Use::InPlace) => format!(
            "{key} '{base}' is used in place (LinkedClone false) by VM '{holder}', whose guest \
             writes to it: no other VM may use it. Give this VM a copy of it (cp or qemu-img \
             convert), or set LinkedClone of VM '{holder}' to true first"
        ),
        (_, Use::Clone) => format!(
            "{key} '{base}' is the base of linked clones of VM '{holder}', which writes in \
             place would corrupt: it cannot be used in place (LinkedClone false). Keep \
             LinkedClone true (a linked clone), or give this VM a copy of it"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn in_place_excludes_every_other_use_and_clones_share() {
        let mut u = BaseUses::default();
        assert_eq!(u.set(p("/b"), "aa", Use::Clone), None);
        assert_eq!(u.conflict(&p("/b"), "bb", Use::Clone), None);
        u.set(p("/b"), "bb", Use::Clone);
        assert_eq!(
            u.conflict(&p("/b"), "cc", Use::InPlace),
            Some(("aa", Use::Clone))
        );
        // The VM itself is no conflict: it may switch its own use.
        u.unset(&p("/b"), "bb");
        assert_eq!(u.conflict(&p("/b"), "aa", Use::InPlace), None);
        assert_eq!(u.set(p("/b"), "aa", Use::InPlace), Some(Use::Clone));
        assert_eq!(
            u.conflict(&p("/b"), "bb", Use::Clone),
            Some(("aa", Use::InPlace))
        );
        assert!(u.holds(&p("/b"), "aa", Use::InPlace));
        u.put_back(&p("/b"), "aa", Some(Use::Clone));
        assert!(u.holds(&p("/b"), "aa", Use::Clone));
        u.put_back(&p("/b"), "aa", None);
        assert!(u.0.is_empty(), "{u:?}");
    }

    #[test]
    fn a_deleted_vm_gives_back_all_it_held() {
        let mut u = BaseUses::default();
        u.set(p("/a"), "aa", Use::InPlace);
        u.set(p("/b"), "aa", Use::Clone);
        u.set(p("/b"), "bb", Use::Clone);
        u.release_all("aa");
        assert_eq!(u.conflict(&p("/a"), "cc", Use::InPlace), None);
        assert!(u.holds(&p("/b"), "bb", Use::Clone));
        assert_eq!(u.0.len(), 1);
    }

    #[test]
    fn one_file_on_two_disks_is_refused_in_place_only() {
        let mut s = Settings {
            hda_disk_image: "/nonexistent/a.raw".into(),
            hdc_disk_image: "/nonexistent/a.raw".into(),
            ..Settings::default()
        };
        let uses = of(&s).unwrap();
        assert_eq!(
            uses,
            [("HdaDiskImage", p("/nonexistent/a.raw"), Use::Clone)]
        );
        s.linked_clone = false;
        assert_eq!(
            of(&s).unwrap_err().to_string(),
            "HdcDiskImage '/nonexistent/a.raw' is the same file as HdaDiskImage, and with \
             LinkedClone false a base image is one disk, written in place; give HdcDiskImage \
             a copy of it, or set LinkedClone to true"
        );
        s.hdc_disk_image.clear();
        assert_eq!(
            of(&s).unwrap(),
            [("HdaDiskImage", p("/nonexistent/a.raw"), Use::InPlace)]
        );
    }
}
