//! The privileged half: `gns3-qemud-supervisor`, a small root service that gives the
//! unprivileged daemon exactly two things over its own QEMU processes, a nice value below 0
//! and a CPU limit. It speaks [`protocol`] on a unix socket, checks every caller with
//! SO_PEERCRED and every process by the pidfd the caller sends ([`target`]).
//!
//! [`priority`] and [`cpulimit`] are also what the daemon uses by itself when it has no
//! supervisor, within what an unprivileged process may do.

pub mod cgroup;
pub mod cpulimit;
pub mod error;
pub mod priority;
pub mod protocol;
pub mod server;
pub mod target;

pub use error::{Error, Result};
