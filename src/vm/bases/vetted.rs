//! What `check` found of each base image, kept while every file it opened stays the file it
//! was (its `Stamp`), so the next use after a change checks it again. So a Start or CreateVM on a base already checked
//! runs no qemu-img; the daemon's first use of each base still does.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use super::vet::{files, Info};
use crate::lock::lock;
use crate::vm::stamp::Stamp;

struct Found {
    format: String,
    files: Vec<(String, Stamp)>,
}

#[derive(Default)]
pub struct Vetted(Mutex<HashMap<String, Found>>);

impl Vetted {
    /// The format found for `base`, if every file it opened is still the one checked.
    pub(super) fn get(&self, base: &str) -> Option<String> {
        self.get_at(base, SystemTime::now())
    }

    fn get_at(&self, base: &str, now: SystemTime) -> Option<String> {
        let mut all = lock(&self.0);
        let found = all.get(base)?;
        if found
            .files
            .iter()
            .all(|(f, s)| Stamp::of(f, now) == Some(*s))
        {
            return Some(found.format.clone());
        }
        all.remove(base);
        None
    }

    /// Keeps what a check begun at `since` found of `base`: its `format` and the files of
    /// its `chain`. Nothing is kept if a file's place is unknown or it changed meanwhile.
    pub(super) fn keep(&self, base: &str, format: &str, chain: &[Info], since: SystemTime) {
        let stamped: Option<Vec<(String, Stamp)>> = chain
            .iter()
            .flat_map(files)
            .map(|f| {
                let f = f?;
                let stamp = Stamp::of(&f, since)?;
                Some((f, stamp))
            })
            .collect();
        if let Some(files) = stamped {
            let format = format.to_string();
            lock(&self.0).insert(base.to_string(), Found { format, files });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::time::Duration;

    fn info(filename: &str) -> Info {
        let json = serde_json::json!({ "filename": filename, "format": "raw" }).to_string();
        super::super::vet::parse(json.as_bytes(), false)
            .unwrap()
            .remove(0)
    }

    fn aged(path: &std::path::Path) -> SystemTime {
        let m = std::fs::metadata(path).unwrap();
        SystemTime::UNIX_EPOCH + Duration::new(m.ctime() as u64 + 2, 0)
    }

    #[test]
    fn a_base_is_checked_again_once_it_changes_or_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.img");
        std::fs::write(&base, b"one").unwrap();
        let name = base.to_str().unwrap();
        let vetted = Vetted::default();
        vetted.keep(name, "raw", &[info(name)], aged(&base));
        assert_eq!(vetted.get_at(name, aged(&base)).as_deref(), Some("raw"));
        std::fs::write(&base, b"three").unwrap();
        assert_eq!(vetted.get(name), None, "written");
        assert_eq!(
            vetted.get_at(name, aged(&base)),
            None,
            "forgotten once changed"
        );

        vetted.keep(name, "raw", &[info(name)], aged(&base));
        let other = dir.path().join("other.img");
        std::fs::write(&other, b"two").unwrap();
        std::fs::rename(&other, &base).unwrap();
        assert_eq!(vetted.get(name), None, "replaced by another file");
    }

    #[test]
    fn nothing_is_kept_of_a_file_that_changed_during_its_check() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.img");
        std::fs::write(&base, b"one").unwrap();
        let name = base.to_str().unwrap();
        let vetted = Vetted::default();
        vetted.keep(name, "raw", &[info(name)], SystemTime::now());
        assert_eq!(vetted.get(name), None);
        let gone = dir.path().join("gone.img");
        let chain = [info(name), info(gone.to_str().unwrap())];
        vetted.keep(name, "raw", &chain, aged(&base));
        assert_eq!(vetted.get(name), None, "a file of the chain cannot be read");
    }
}
