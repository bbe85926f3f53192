//! A UDP tunnel as a VM's record keeps it: an adapter's cable to a remote host and port.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Tunnel {
    pub adapter: u32,
    pub local_port: u16,
    pub remote_host: String,
    pub remote_port: u16,
}

impl Tunnel {
    /// As the `Tunnels` property shows it.
    pub fn as_tuple(&self) -> (u32, u16, String, u16) {
        (
            self.adapter,
            self.local_port,
            self.remote_host.clone(),
            self.remote_port,
        )
    }
}
