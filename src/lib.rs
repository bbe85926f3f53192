//! gns3-qemud: QEMU virtual machines for network labs, one D-Bus object per VM.
//!
//! `dbus` is the face, `vm` one VM (an actor per VM), `manager` the set of VMs, `model` what
//! is kept of a VM, `store` its record on disk, `ports` the port manager, `console` a running
//! VM's console and listeners, `access` who may reach them, `boot` what the state directory
//! keeps of the host's boots, `daemon` the process around them.

pub mod access;
pub mod boot;
pub mod cli;
pub mod config;
pub mod console;
pub mod daemon;
pub mod dbus;
pub mod heap;
pub mod lock;
pub mod manager;
pub mod model;
pub mod ports;
pub mod privilege;
pub mod store;
pub mod vm;

// The privileged half is a crate of its own (src/supervisor/), so that its binary links no
// zbus and no tokio. Re-exported under the paths it had as a module rather than named at each
// use: the daemon, its tests and its benchmark read as before, and only this file knows.
pub use gns3_qemud_supervisor as supervisor;
pub use gns3_qemud_supervisor::{pidfd, procfs};
