//! gns3-qemud: QEMU virtual machines for network labs, one D-Bus object per VM.
//!
//! `dbus` is the face, `vm` one VM (an actor per VM), `manager` the set of VMs, `store`
//! their records on disk, `ports` the port manager, `daemon` the process around them.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod dbus;
pub mod heap;
pub mod manager;
pub mod pidfd;
pub mod ports;
pub mod privilege;
pub mod procfs;
pub mod store;
pub mod supervisor;
pub mod vm;
