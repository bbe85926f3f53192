//! What the daemon keeps of a VM: the record in `vm.json`, its settings and its tunnels.
//! A leaf: it imports nothing from the rest of the daemon, so the store, the VM's actor and
//! the D-Bus face all build on it without importing each other.

pub mod settings;
pub mod table;
pub mod tunnel;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use settings::{
    Accelerator, BootOrder, CustomAdapter, DiskInterface, Display, Firmware, OnStop, Priority,
    Setting, Settings,
};
pub use tunnel::Tunnel;

/// What `vm.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Record {
    pub id: String,
    pub project: String,
    pub settings: Settings,
    /// One per adapter at most, in adapter order; attached at every start.
    #[serde(default)]
    pub tunnels: Vec<Tunnel>,
    /// Why the VM last stopped when nobody asked it to; kept across daemon restarts.
    pub exit_status: i32,
    pub last_error: String,
    /// The format of each base image the settings name (path -> qemu-img's format name),
    /// found when the VM first used it and given to qemu-img from then on, so a base whose
    /// content is replaced by another format is never read as that format. Only the current
    /// bases have one: setting an image anew forgets the old one's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub image_formats: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_from_before_image_formats_reads_none() {
        let r: Record = serde_json::from_str(
            r#"{"Id": "ab", "Project": "", "Settings": {"Name": "r1"}, "ExitStatus": 0, "LastError": ""}"#,
        )
        .unwrap();
        assert!(r.image_formats.is_empty());
        let mut r = r;
        r.image_formats
            .insert("/images/base.qcow2".into(), "qcow2".into());
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["ImageFormats"]["/images/base.qcow2"], "qcow2");
        assert_eq!(serde_json::from_value::<Record>(json).unwrap(), r);
    }

    /// The model is a leaf: whatever it names of the crate is the model itself.
    #[test]
    fn the_model_imports_nothing_of_the_daemon() {
        for (file, text) in [
            ("mod.rs", include_str!("mod.rs")),
            ("settings.rs", include_str!("settings.rs")),
            ("table.rs", include_str!("table.rs")),
            ("tunnel.rs", include_str!("tunnel.rs")),
        ] {
            // The code, not its tests (this one names what it looks for).
            let text = text.split("#[cfg(test)]").next().unwrap_or(text);
            for (at, _) in text.match_indices("crate::") {
                let rest = &text[at + "crate::".len()..];
                assert!(
                    rest.starts_with("model::"),
                    "src/model/{file} imports crate::{}",
                    &rest[..rest
                        .find(|c: char| !c.is_alphanumeric() && c != '_')
                        .unwrap_or(0)]
                );
            }
            assert!(
                !text.contains("super::super"),
                "src/model/{file} reaches outside"
            );
        }
    }
}
