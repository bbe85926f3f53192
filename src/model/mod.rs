//! What the daemon keeps of a VM: the record in `vm.json`, its settings and its tunnels.
//! A leaf: it imports nothing from the rest of the daemon, so the store, the VM's actor and
//! the D-Bus face all build on it without importing each other.

pub mod settings;
pub mod table;
pub mod tunnel;

use serde::{Deserialize, Serialize};

pub use settings::{Accelerator, Display, Priority, Setting, Settings};
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
}

#[cfg(test)]
mod tests {
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
