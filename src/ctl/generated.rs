//! The files of the gns3-qemuctl package that are generated (from the clap definition, the
//! completion engine's hooks and the contract) are committed, so that building the package
//! needs no generator; this test fails when one differs from what its generator gives now.
//! After changing the command line, the contract or the schema, rewrite them all with:
//!
//!     GNS3_QEMUCTL_REGENERATE=1 cargo test -p gns3-qemuctl --lib generated
//!
//! and commit the result.

use std::path::PathBuf;

use crate::{complete, man, schema};

const REGENERATE: &str = "GNS3_QEMUCTL_REGENERATE";

/// The zsh hook is installed in a completion directory of fpath, which zsh autoloads as the
/// function `_gns3-qemuctl` on the first Tab: clap's hook only registers its completer then,
/// so this line also runs it, the first time (and does nothing when the hook is sourced).
const ZSH_AUTOLOAD: &str =
    "[[ ${funcstack[1]} = _gns3-qemuctl ]] && _clap_dynamic_completer_gns3_qemuctl \"$@\"\n";

/// Each generated file, by its path in the package's source (packaging/gns3-qemuctl/), and
/// its content as the generators give it now.
fn files() -> Vec<(&'static str, String)> {
    let hook = |shell| complete::registration(shell).unwrap();
    let mut schema = serde_json::to_string_pretty(&schema::lab_schema()).unwrap();
    schema.push('\n');
    vec![
        ("gns3-qemuctl.1", man::render().unwrap()),
        ("completions/gns3-qemuctl.bash", hook("bash")),
        (
            "completions/_gns3-qemuctl",
            format!("{}{ZSH_AUTOLOAD}", hook("zsh")),
        ),
        ("completions/gns3-qemuctl.fish", hook("fish")),
        ("lab.schema.json", schema),
    ]
}

pub fn dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../packaging/gns3-qemuctl"
    ))
}

#[test]
fn generated_files_are_current() {
    let regenerate = std::env::var_os(REGENERATE).is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for (file, want) in files() {
        let path = dir().join(file);
        if regenerate {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &want).unwrap();
            continue;
        }
        if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "packaging/gns3-qemuctl/: {} differ from what the clap definition, the contract and \
         the generators give now; rewrite them with \
         `{REGENERATE}=1 cargo test -p gns3-qemuctl --lib generated` and commit them",
        stale.join(", ")
    );
}
