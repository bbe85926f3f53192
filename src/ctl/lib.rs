//! gns3-qemuctl, the command-line client of gns3-qemud: [`cli`] is what it takes,
//! [`commands`] what it does, through the [`proxies`] the integration tests use too, over
//! the connection [`bus`] makes. [`contract`] turns `Prop=Value` into the contract's types;
//! [`output`] prints for people and for programs (`--json`); [`error`] is every failure and
//! its exit code. [`lab`] reads lab files and decides what `up` does; [`snapshot`] is every
//! VM at one moment, [`links`] the cables their tunnels make. [`schema`] is the lab files'
//! JSON schema, [`complete`] completes the command line for the shells. [`pager`] pages long
//! outputs for people, [`duration`] reads time spans as systemd does. What is generated for
//! the package (the man page, the shells' hooks, the schema) is checked and rewritten by the
//! test in `generated.rs`. [`events`] is the daemon's signals as one stream, for `watch`,
//! `wait` and the GNS3 compute.

pub mod bus;
pub mod cli;
pub mod commands;
pub mod complete;
pub mod contract;
pub mod duration;
pub mod error;
pub mod events;
pub mod lab;
pub mod links;
pub mod managed;
pub mod output;
pub mod pager;
pub mod proxies;
pub mod schema;
pub mod snapshot;

#[cfg(test)]
mod generated;
#[cfg(test)]
mod man;
