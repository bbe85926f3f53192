//! gns3-qemuctl, the command-line client of gns3-qemud: [`cli`] is what it takes,
//! [`commands`] what it does, through the [`proxies`] the integration tests use too, over
//! the connection [`bus`] makes. [`contract`] turns `Prop=Value` into the contract's types;
//! [`output`] prints for people and for programs (`--json`); [`error`] is every failure and
//! its exit code. [`lab`] reads lab files (`up` and the other lab commands are to come),
//! [`schema`] is their JSON schema. [`complete`] completes the command line for the shells.
//! What is generated from these for the package (the man page, the shells' hooks, the
//! schema) is checked and rewritten by the test in `generated.rs`.

pub mod bus;
pub mod cli;
pub mod commands;
pub mod complete;
pub mod contract;
pub mod error;
pub mod lab;
pub mod output;
pub mod proxies;
pub mod schema;

#[cfg(test)]
mod generated;
#[cfg(test)]
mod man;
