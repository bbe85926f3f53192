//! gns3-qemuctl, the command-line client of gns3-qemud: [`cli`] is what it takes,
//! [`commands`] what it does, through the [`proxies`] the integration tests use too, over
//! the connection [`bus`] makes. [`contract`] turns `Prop=Value` into the contract's types;
//! [`output`] prints for people and for programs (`--json`); [`error`] is every failure and
//! its exit code. [`lab`] reads lab files (`up` and the other lab commands are to come).
//! [`pager`] pages long outputs for people, [`duration`] reads time spans as systemd does.

pub mod bus;
pub mod cli;
pub mod commands;
pub mod contract;
pub mod duration;
pub mod error;
pub mod lab;
pub mod links;
pub mod output;
pub mod pager;
pub mod proxies;
pub mod snapshot;
