//! The command line, as clap reads it: a usage error is clap's, with exit code 2.

use clap::{Args, Parser, Subcommand};
use clap_complete::ArgValueCandidates;

use crate::complete::vm_names;

#[derive(Debug, Parser)]
#[command(
    name = "gns3-qemuctl",
    version,
    about = "Create, configure and drive the QEMU VMs of gns3-qemud"
)]
pub struct Cli {
    /// Connect to the bus at this D-Bus address instead of the system bus.
    #[arg(long, global = true, value_name = "ADDR", conflicts_with = "host")]
    pub address: Option<String>,
    /// Operate on a remote host, through `ssh -xT [USER@]HOST systemd-stdio-bridge`.
    #[arg(short = 'H', long, global = true, value_name = "[USER@]HOST")]
    pub host: Option<String>,
    /// Print tables without their header and footer.
    #[arg(long, global = true)]
    pub no_legend: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the VMs.
    List(Json),
    /// Show the properties of a VM.
    Show(Show),
    /// Create a VM.
    Create(Create),
    /// Change settings of a VM, all at once or none.
    Set {
        /// The VM's name or id.
        #[arg(add = ArgValueCandidates::new(vm_names))]
        vm: String,
        /// Settings, by their D-Bus property names.
        #[arg(required = true, value_name = "PROP=VALUE")]
        settings: Vec<String>,
    },
    /// Start VMs (resume them if paused).
    Start(Vms),
    /// Stop VMs.
    Stop(Vms),
    /// Pause VMs.
    Suspend(Vms),
    /// Resume paused VMs.
    Resume(Vms),
    /// Reset VMs, as the reset button does.
    Reload(Vms),
    /// Print a VM's QEMU log (qemu.log).
    Log {
        /// The VM's name or id.
        #[arg(add = ArgValueCandidates::new(vm_names))]
        vm: String,
    },
    /// Print the command line Start runs, as one line a shell takes.
    Cmdline {
        /// The VM's name or id.
        #[arg(add = ArgValueCandidates::new(vm_names))]
        vm: String,
    },
    /// Run a QEMU monitor (HMP) command; without one, each line read from stdin.
    Monitor {
        /// The VM's name or id.
        #[arg(add = ArgValueCandidates::new(vm_names))]
        vm: String,
        /// The command, as one line (`info status`).
        command: Vec<String>,
    },
    /// Print what the daemon is: its version, console host and QEMU binaries.
    Info,
    /// Delete VMs and their files.
    Delete {
        #[command(flatten)]
        vms: Vms,
        /// Delete running VMs too (they are stopped first).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct Json {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct Vms {
    /// The VMs' names or ids.
    #[arg(required = true, value_name = "VM", add = ArgValueCandidates::new(vm_names))]
    pub vms: Vec<String>,
}

#[derive(Debug, Args)]
pub struct Show {
    /// The VM's name or id.
    #[arg(add = ArgValueCandidates::new(vm_names))]
    pub vm: String,
    /// Show only these properties.
    #[arg(short = 'p', long = "property", value_name = "PROP")]
    pub properties: Vec<String>,
    /// Print the bare values, without `PROP=`.
    #[arg(long, conflicts_with = "json")]
    pub value: bool,
    #[command(flatten)]
    pub json: Json,
}

#[derive(Debug, Args)]
pub struct Create {
    /// The new VM's name.
    pub name: String,
    /// Guest RAM: MiB, or a size with a K, M, G or T suffix (512M, 2G).
    #[arg(long, value_name = "SIZE")]
    pub ram: Option<String>,
    /// Number of network adapters.
    #[arg(long, value_name = "N")]
    pub adapters: Option<u32>,
    /// The base disk image (HdaDiskImage); the VM gets a linked clone of it.
    #[arg(long, value_name = "IMG")]
    pub disk: Option<String>,
    /// A kernel to boot directly (KernelImage).
    #[arg(long, value_name = "K")]
    pub kernel: Option<String>,
    /// The initrd for --kernel (Initrd).
    #[arg(long, value_name = "I")]
    pub initrd: Option<String>,
    /// The kernel command line (KernelCommandLine).
    #[arg(long, value_name = "A")]
    pub append: Option<String>,
    /// Any other setting, by its D-Bus property name (also Id and Project).
    #[arg(long = "set", value_name = "PROP=VALUE")]
    pub settings: Vec<String>,
    /// Start the VM once created.
    #[arg(long)]
    pub start: bool,
}
