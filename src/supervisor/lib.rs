//! The privileged half: `gns3-qemud-supervisor`, a small root service that gives the
//! unprivileged daemon exactly two things over its own QEMU processes, a nice value below 0
//! and a CPU limit. It speaks [`protocol`] on a unix socket, checks every caller with
//! SO_PEERCRED and every process by the pidfd the caller sends ([`target`]).
//!
//! [`priority`] and [`cpulimit`] are also what the daemon uses by itself when it has no
//! supervisor, within what an unprivileged process may do, and [`pidfd`] and [`procfs`] are
//! the facts about processes both halves go by.
//!
//! A crate of its own, so that the privileged binary is built from only what it uses: no
//! zbus, no tokio (`cargo tree -p gns3-qemud-supervisor -e normal`; tests/toolchain.rs checks).

pub mod cgroup;
pub mod cpulimit;
pub mod error;
pub mod pidfd;
pub mod priority;
pub mod procfs;
pub mod protocol;
pub mod server;
pub mod target;

pub use error::{Error, Result};
