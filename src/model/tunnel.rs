//! A UDP tunnel as a VM's record keeps it: an adapter's cable to a remote host and port.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Tunnel {
    pub adapter: u32,
    pub local_port: u16,
    pub remote_host: String,
    pub remote_port: u16,
    /// The cable passes nothing, either way, while the guest keeps its carrier
    /// (SetLinkSuspended). A new tunnel on the adapter is a new cable, not suspended.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspended: bool,
}

impl Tunnel {
    /// The same cable: the same ends, suspended or not.
    pub fn same_ends(&self, other: &Tunnel) -> bool {
        (
            self.adapter,
            self.local_port,
            &self.remote_host,
            self.remote_port,
        ) == (
            other.adapter,
            other.local_port,
            &other.remote_host,
            other.remote_port,
        )
    }

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
