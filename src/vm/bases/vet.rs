//! What an image, as `qemu-img info` describes it, makes QEMU open besides itself, and
//! whether the daemon lets it: plain absolute paths under `image_dirs`, resolved first (a
//! `..` or a symlink does not get out), and never a json: or protocol name.

use serde::Deserialize;
use std::fs;
use std::path::{Path, PathBuf};

use crate::vm::error::{shown, Error, Result};

/// One image as `qemu-img info --output=json` describes it; `--backing-chain` gives a list.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub(super) struct Info {
    pub(super) filename: String,
    pub(super) format: String,
    /// The backing file's name as the image writes it.
    pub(super) backing_filename: Option<String>,
    /// That name resolved as QEMU resolves it (relative to this image's directory).
    pub(super) full_backing_filename: Option<String>,
    pub(super) backing_filename_format: Option<String>,
    format_specific: Option<Specific>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
struct Specific {
    #[serde(default)]
    data: serde_json::Value,
}

pub(super) fn parse(out: &[u8], chain: bool) -> serde_json::Result<Vec<Info>> {
    if chain {
        serde_json::from_slice(out)
    } else {
        serde_json::from_slice(out).map(|one| vec![one])
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Backing,
    DataFile,
    Extent,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Backing => "backing file",
            Kind::DataFile => "external data file",
            Kind::Extent => "extent",
        }
    }
}

/// A file an image makes QEMU open: its name as the image writes it, and where QEMU looks
/// for it (None: qemu-img cannot tell, or QEMU's own working directory).
#[derive(Debug, PartialEq)]
struct Other {
    kind: Kind,
    name: String,
    path: Option<String>,
}

/// The files `image` makes QEMU open besides itself.
fn others(image: &Info) -> Vec<Other> {
    let mut out = Vec::new();
    if let Some(name) = &image.backing_filename {
        out.push(Other {
            kind: Kind::Backing,
            name: name.clone(),
            path: image.full_backing_filename.clone(),
        });
    }
    let data = image.format_specific.as_ref().map(|s| &s.data);
    // qcow2's external data file: a relative name is opened from QEMU's working directory.
    if let Some(name) = data.and_then(|d| d.get("data-file")?.as_str()) {
        out.push(Other {
            kind: Kind::DataFile,
            name: name.into(),
            path: Path::new(name).is_absolute().then(|| name.into()),
        });
    }
    // A VMDK's extents, named as opened; a single-file VMDK's one extent is itself.
    let extents = data.and_then(|d| d.get("extents")?.as_array());
    for name in extents
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("filename")?.as_str())
    {
        if name != image.filename {
            out.push(Other {
                kind: Kind::Extent,
                name: name.into(),
                path: Path::new(name).is_absolute().then(|| name.into()),
            });
        }
    }
    out
}

/// Every file `image` makes QEMU open, itself first, by the names it opens them by; None
/// for one whose place qemu-img cannot tell.
pub(super) fn files(image: &Info) -> Vec<Option<String>> {
    let others = others(image).into_iter().map(|o| o.path);
    std::iter::once(Some(image.filename.clone()))
        .chain(others)
        .collect()
}

/// The protocol of a name QEMU reads as one (`nbd:…`, `http://…`, `file:…`): as QEMU's
/// `path_has_protocol`, a ':' before any '/'.
fn protocol(name: &str) -> Option<&str> {
    let end = name.find([':', '/'])?;
    (name.as_bytes()[end] == b':').then(|| &name[..end])
}

/// The daemon's image_dirs, resolved (symlinks, `..`) as each file is before the test.
pub(super) struct Dirs {
    canonical: Vec<PathBuf>,
    shown: String,
}

impl Dirs {
    pub(super) fn new(dirs: &[PathBuf]) -> Dirs {
        let listed: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        Dirs {
            // A directory that is not there (yet) holds nothing.
            canonical: dirs
                .iter()
                .filter_map(|d| fs::canonicalize(d).ok())
                .collect(),
            shown: if listed.is_empty() {
                "none are set".into()
            } else {
                listed.join(", ")
            },
        }
    }

    /// Whether `canonical` (a resolved path) lies under one of the directories.
    fn cover(&self, canonical: &Path) -> bool {
        under(canonical, &self.canonical)
    }
}

/// Whether `path` lies under one of `dirs`, all resolved: component by component, so
/// /srv/images2 is not under /srv/images.
fn under(path: &Path, dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|d| path.starts_with(d))
}

pub(super) fn canonical(key: &str, base: &str, path: &str) -> Result<PathBuf> {
    fs::canonicalize(path).map_err(|e| {
        Error::ImageNotAccessible(if path == base {
            format!("{key} '{base}' is not accessible ({e})")
        } else {
            format!(
                "{key} '{base}' would make QEMU open '{path}', which is not accessible ({e}). \
                 Put it back, or give {}",
                alone(base)
            )
        })
    })
}

/// The way out of most refusals.
pub(super) fn alone(base: &str) -> String {
    format!("an image that stands alone (qemu-img convert -O qcow2 '{base}' NEW.qcow2 makes one)")
}

/// Refuses what `image` (the base, or a file of its chain) makes QEMU open unless the
/// daemon lets it: plain paths under `dirs`, the base there too.
pub(super) fn vet(key: &str, base: &str, image: &Info, is_base: bool, dirs: &Dirs) -> Result<()> {
    let others = others(image);
    let whose = |kind: Kind| {
        if is_base {
            format!("its {}", kind.name())
        } else {
            format!("the {} of '{}'", kind.name(), image.filename)
        }
    };
    let refuse = |why: String| Err(Error::ImageNotAccessible(format!("{key} '{base}' {why}")));
    for o in &others {
        let named = format!(
            "would make QEMU open {} named '{}'",
            whose(o.kind),
            shown(&o.name)
        );
        if o.name.starts_with("json:") {
            return refuse(format!(
                "{named}, a json: name: the daemon never lets QEMU follow one, whatever \
                 image_dirs says (it can name any file or a network server). Give {}, or one \
                 whose chain names plain paths",
                alone(base)
            ));
        }
        if let Some(proto) = protocol(&o.name) {
            return refuse(format!(
                "{named}, which names the {proto} protocol: the daemon never lets QEMU follow \
                 a protocol name (file: included), whatever image_dirs says. Give {}, or one \
                 whose chain names plain paths",
                alone(base)
            ));
        }
        let Some(path) = o.path.as_deref().filter(|p| Path::new(p).is_absolute()) else {
            let why = match o.kind {
                Kind::Backing => "which qemu-img cannot place",
                _ => "a relative name, which QEMU would look up from its own working directory",
            };
            return refuse(format!(
                "{named}, {why}. Give {}, or one that names its {} by its absolute path",
                alone(base),
                o.kind.name()
            ));
        };
        let at = canonical(key, base, path)?;
        if !dirs.cover(&at) {
            return refuse(format!(
                "would make QEMU open {}, '{path}'{}, which is not under the daemon's \
                 image_dirs ({}): the guest would see whatever that file holds. Give {}, or add \
                 the directories of the files of its chain to image_dirs in the daemon's \
                 configuration",
                whose(o.kind),
                resolved(path, &at),
                dirs.shown,
                alone(base)
            ));
        }
    }
    if let (true, Some(first)) = (is_base, others.first()) {
        let at = canonical(key, base, base)?;
        if !dirs.cover(&at) {
            return refuse(format!(
                "opens another file ({} '{}'), so it must lie under the daemon's image_dirs \
                 ({}) with the files of its chain, and it does not{}. Move it under one of \
                 them, or give {}",
                whose(first.kind),
                shown(&first.name),
                dirs.shown,
                resolved(base, &at),
                alone(base)
            ));
        }
    }
    Ok(())
}

/// " (that is '…')" where resolving `path` led elsewhere.
fn resolved(path: &str, at: &Path) -> String {
    if Path::new(path) == at {
        String::new()
    } else {
        format!(" (that is '{}')", at.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What qemu-img 7.2 prints for `info --backing-chain --output=json` of a qcow2 on a
    /// relative backing file (trimmed of sizes).
    const CHAIN: &str = r#"[
        {"backing-filename-format": "qcow2", "virtual-size": 1048576,
         "filename": "/srv/images/app.qcow2", "format": "qcow2",
         "format-specific": {"type": "qcow2", "data": {"compat": "1.1", "corrupt": false}},
         "full-backing-filename": "/srv/images/base.qcow2", "backing-filename": "base.qcow2",
         "dirty-flag": false},
        {"virtual-size": 1048576, "filename": "/srv/images/base.qcow2", "format": "qcow2",
         "format-specific": {"type": "qcow2", "data": {"compat": "1.1"}}, "dirty-flag": false}
    ]"#;

    fn image(filename: &str) -> Info {
        Info {
            filename: filename.into(),
            format: "qcow2".into(),
            ..Info::default()
        }
    }

    fn backed(filename: &str, backing: &str, full: &str) -> Info {
        Info {
            backing_filename: Some(backing.into()),
            full_backing_filename: Some(full.into()),
            ..image(filename)
        }
    }

    fn with_data(filename: &str, data: serde_json::Value) -> Info {
        Info {
            format_specific: Some(Specific { data }),
            ..image(filename)
        }
    }

    fn dirs(dirs: &[&Path]) -> Dirs {
        Dirs::new(&dirs.iter().map(|d| d.to_path_buf()).collect::<Vec<_>>())
    }

    fn refusal(base: &Path, image: &Info, is_base: bool, dirs: &Dirs) -> String {
        let base = base.to_str().unwrap();
        match vet("HdaDiskImage", base, image, is_base, dirs) {
            Err(Error::ImageNotAccessible(why)) => why,
            other => panic!("{image:?}: {other:?}"),
        }
    }

    #[test]
    fn qemu_img_info_is_read_alone_and_as_a_chain() {
        let chain = parse(CHAIN.as_bytes(), true).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(
            chain[0],
            Info {
                backing_filename_format: Some("qcow2".into()),
                format_specific: Some(Specific {
                    data: serde_json::json!({"compat": "1.1", "corrupt": false})
                }),
                ..backed(
                    "/srv/images/app.qcow2",
                    "base.qcow2",
                    "/srv/images/base.qcow2"
                )
            }
        );
        assert_eq!(chain[1].filename, "/srv/images/base.qcow2");
        assert_eq!(chain[1].backing_filename, None);
        let alone = r#"{"filename": "/srv/r.img", "format": "raw", "virtual-size": 1}"#;
        assert_eq!(
            parse(alone.as_bytes(), false).unwrap(),
            [Info {
                format: "raw".into(),
                ..image("/srv/r.img")
            }]
        );
        assert!(parse(alone.as_bytes(), true).is_err());
        assert!(
            parse(b"{\"format\": \"raw\"}", false).is_err(),
            "no filename"
        );
    }

    #[test]
    fn what_an_image_opens() {
        let chain = parse(CHAIN.as_bytes(), true).unwrap();
        assert_eq!(
            others(&chain[0]),
            [Other {
                kind: Kind::Backing,
                name: "base.qcow2".into(),
                path: Some("/srv/images/base.qcow2".into()),
            }]
        );
        assert_eq!(others(&chain[1]), []);
        let data = |name: &str| with_data("/i/d.qcow2", serde_json::json!({"data-file": name}));
        assert_eq!(
            others(&data("/i/d.raw"))[0].path.as_deref(),
            Some("/i/d.raw")
        );
        let relative = others(&data("d.raw"));
        assert_eq!(
            (relative[0].kind, relative[0].path.as_deref()),
            (Kind::DataFile, None)
        );
        // A single-file VMDK's extent is itself; a flat one's is another file.
        let vmdk = |extent: &str| {
            with_data(
                "/i/v.vmdk",
                serde_json::json!({"extents": [{"filename": extent, "format": "FLAT"}]}),
            )
        };
        assert_eq!(others(&vmdk("/i/v.vmdk")), []);
        assert_eq!(
            others(&vmdk("/i/v-flat.vmdk")),
            [Other {
                kind: Kind::Extent,
                name: "/i/v-flat.vmdk".into(),
                path: Some("/i/v-flat.vmdk".into()),
            }]
        );
    }

    #[test]
    fn protocol_names_as_qemu_reads_them() {
        assert_eq!(protocol("nbd:127.0.0.1:10809"), Some("nbd"));
        assert_eq!(protocol("http://example.com/a.qcow2"), Some("http"));
        assert_eq!(protocol("file:/etc/shadow"), Some("file"));
        assert_eq!(protocol("json:{}"), Some("json"));
        assert_eq!(protocol("/srv/a:b.qcow2"), None);
        assert_eq!(protocol("sub/a:b.qcow2"), None);
        assert_eq!(protocol("base.qcow2"), None);
        assert_eq!(protocol(""), None);
    }

    #[test]
    fn under_goes_by_whole_components() {
        let dirs = [PathBuf::from("/srv/images"), PathBuf::from("/data")];
        assert!(under(Path::new("/srv/images/a.qcow2"), &dirs));
        assert!(under(Path::new("/srv/images/sub/a.qcow2"), &dirs));
        assert!(under(Path::new("/data/a.qcow2"), &dirs));
        assert!(!under(Path::new("/srv/images2/a.qcow2"), &dirs));
        assert!(!under(Path::new("/srv/a.qcow2"), &dirs));
        assert!(!under(Path::new("/srv/images/a.qcow2"), &[]));
    }

    /// A tree with `images/` (the image_dirs) and `outside/`, a file in each.
    fn tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let (images, outside) = (root.path().join("images"), root.path().join("outside"));
        for dir in [&images, &outside] {
            fs::create_dir(dir).unwrap();
            fs::write(dir.join("x.qcow2"), b"").unwrap();
        }
        (root, images, outside)
    }

    #[test]
    fn a_base_that_opens_nothing_passes_anywhere() {
        let (_root, _images, outside) = tree();
        let base = outside.join("x.qcow2");
        let b = base.to_str().unwrap();
        assert!(vet("HdaDiskImage", b, &image(b), true, &dirs(&[])).is_ok());
        let vmdk = with_data(b, serde_json::json!({"extents": [{"filename": b}]}));
        assert!(vet("HdaDiskImage", b, &vmdk, true, &dirs(&[])).is_ok());
    }

    #[test]
    fn a_file_outside_image_dirs_is_refused_however_it_is_reached() {
        let (_root, images, outside) = tree();
        let base = images.join("app.qcow2");
        fs::write(&base, b"").unwrap();
        let b = base.to_str().unwrap();
        let secret = outside.join("x.qcow2");
        let s = secret.to_str().unwrap();
        let covered = dirs(&[&images]);
        let why = refusal(&base, &backed(b, s, s), true, &dirs(&[]));
        assert_eq!(
            why,
            format!(
                "HdaDiskImage '{b}' would make QEMU open its backing file, '{s}', which is not \
                 under the daemon's image_dirs (none are set): the guest would see whatever that \
                 file holds. Give an image that stands alone (qemu-img convert -O qcow2 '{b}' \
                 NEW.qcow2 makes one), or add the directories of the files of its chain to \
                 image_dirs in the daemon's configuration"
            )
        );
        assert!(
            refusal(&base, &backed(b, s, s), true, &covered).contains(&format!(
                "which is not under the daemon's image_dirs ({})",
                images.display()
            ))
        );
        // `..` and a symlink are resolved before the test.
        let dotdot = format!("{}/../outside/x.qcow2", images.display());
        let why = refusal(
            &base,
            &backed(b, "../outside/x.qcow2", &dotdot),
            true,
            &covered,
        );
        assert!(
            why.contains(&format!("'{dotdot}' (that is '{s}'), which is not under")),
            "{why}"
        );
        let link = images.join("link.qcow2");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let l = link.to_str().unwrap();
        let why = refusal(&base, &backed(b, "link.qcow2", l), true, &covered);
        assert!(why.contains(&format!("(that is '{s}')")), "{why}");
        // So is an image_dirs entry that is a symlink: what it leads to is what counts.
        let images_link = images.parent().unwrap().join("images-link");
        std::os::unix::fs::symlink(&images, &images_link).unwrap();
        let inside = images.join("x.qcow2");
        let i = inside.to_str().unwrap();
        assert!(vet(
            "HdaDiskImage",
            b,
            &backed(b, i, i),
            true,
            &dirs(&[&images_link])
        )
        .is_ok());
        // Deeper in the chain, and external data files and extents, alike.
        let why = refusal(&base, &backed(i, s, s), false, &covered);
        assert!(
            why.contains(&format!(
                "open the backing file of '{i}', '{s}', which is not"
            )),
            "{why}"
        );
        let data = with_data(b, serde_json::json!({"data-file": s}));
        assert!(refusal(&base, &data, true, &covered).contains("open its external data file, '"));
        let flat = with_data(b, serde_json::json!({"extents": [{"filename": s}]}));
        assert!(refusal(&base, &flat, true, &covered).contains("open its extent, '"));
        let missing = images.join("gone.qcow2");
        let m = missing.to_str().unwrap();
        let why = refusal(&base, &backed(b, m, m), true, &covered);
        assert!(
            why.contains(&format!("open '{m}', which is not accessible (")),
            "{why}"
        );
    }

    #[test]
    fn json_protocol_and_relative_names_are_refused_even_under_image_dirs() {
        let (root, images, _outside) = tree();
        let base = images.join("app.qcow2");
        let b = base.to_str().unwrap();
        let everything = dirs(&[root.path(), Path::new("/")]);
        let json = r#"json:{"driver":"file","filename":"/etc/shadow"}"#;
        let why = refusal(&base, &backed(b, json, json), true, &everything);
        assert_eq!(
            why,
            format!(
                "HdaDiskImage '{b}' would make QEMU open its backing file named '{json}', a \
                 json: name: the daemon never lets QEMU follow one, whatever image_dirs says (it \
                 can name any file or a network server). Give an image that stands alone \
                 (qemu-img convert -O qcow2 '{b}' NEW.qcow2 makes one), or one whose chain names \
                 plain paths"
            )
        );
        for (name, proto) in [("nbd:127.0.0.1:10809", "nbd"), ("https://x/a", "https")] {
            let why = refusal(&base, &backed(b, name, name), true, &everything);
            assert!(
                why.contains(&format!("named '{name}', which names the {proto} protocol")),
                "{why}"
            );
        }
        let file = format!("file:{}/x.qcow2", images.display());
        let why = refusal(&base, &backed(b, &file, &file), true, &everything);
        assert!(why.contains("names the file protocol"), "{why}");
        let data = with_data(b, serde_json::json!({"data-file": "x.qcow2"}));
        let why = refusal(&base, &data, true, &everything);
        assert!(
            why.contains(
                "its external data file named 'x.qcow2', a relative name, which QEMU would look \
                 up from its own working directory"
            ),
            "{why}"
        );
        let unplaced = Info {
            backing_filename: Some("x.qcow2".into()),
            ..image(b)
        };
        let why = refusal(&base, &unplaced, true, &everything);
        assert!(why.contains("which qemu-img cannot place"), "{why}");
    }

    #[test]
    fn a_base_that_opens_files_must_lie_under_image_dirs_too() {
        let (_root, images, outside) = tree();
        let base = outside.join("x.qcow2");
        let b = base.to_str().unwrap();
        let inside = images.join("x.qcow2");
        let i = inside.to_str().unwrap();
        let why = refusal(&base, &backed(b, i, i), true, &dirs(&[&images]));
        assert_eq!(
            why,
            format!(
                "HdaDiskImage '{b}' opens another file (its backing file '{i}'), so it must lie \
                 under the daemon's image_dirs ({}) with the files of its chain, and it does not. \
                 Move it under one of them, or give an image that stands alone (qemu-img convert \
                 -O qcow2 '{b}' NEW.qcow2 makes one)",
                images.display()
            )
        );
        // A file of the chain deeper down is no base: where it lies was tested as its
        // parent's backing file.
        assert!(vet(
            "HdaDiskImage",
            b,
            &backed(b, i, i),
            false,
            &dirs(&[&images])
        )
        .is_ok());
    }
}
