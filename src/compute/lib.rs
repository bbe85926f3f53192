//! gns3-qemud-compute: GNS3's compute API (HTTP and websockets, under /v3/compute) in front of
//! gns3-qemud, so that a GNS3 controller runs its QEMU nodes as the daemon's VMs. It is a
//! client of the D-Bus contract like gns3-qemuctl, with no state of its own: [`app`] is what
//! the handlers share, [`routes`] the API, [`error`] every failure as GNS3 expects it,
//! [`auth`] the controller's credentials, [`config`] the file and flags, [`ids`] GNS3's ids
//! and the daemon's paths, [`host`] this host's figures, [`events`] the daemon's signals as
//! the notification socket's messages.

pub mod app;
pub mod auth;
pub mod config;
pub mod error;
pub mod events;
pub mod host;
pub mod ids;
pub mod images;
pub mod node;
pub mod properties;
pub mod routes;
pub mod serve;
