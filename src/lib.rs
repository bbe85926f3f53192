//! gns3-qemud: QEMU virtual machines for network labs, one D-Bus object per VM.
//!
//! `dbus` is the face, `vm` one VM (an actor per VM), `manager` the set of VMs, `model` what
//! is kept of a VM, `store` its record on disk, `ports` the port manager, `daemon` the process around them.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod dbus;
pub mod heap;
pub mod lock;
pub mod manager;
pub mod model;
pub mod pidfd;
pub mod ports;
pub mod privilege;
pub mod procfs;
pub mod store;
pub mod supervisor;
pub mod vm;
