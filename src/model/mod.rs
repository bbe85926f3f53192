//! What the daemon keeps of a VM: the record in `vm.json`, its settings and its tunnels.
//! A leaf: it imports nothing from the rest of the daemon, so the store, the VM's actor and
//! the D-Bus face all build on it without importing each other.

pub mod settings;
pub mod table;
pub mod tunnel;

use serde::{Deserialize, Serialize};

pub use settings::{Accelerator, Priority, Setting, Settings};
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
