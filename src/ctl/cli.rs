//! The command line, as clap reads it: a usage error is clap's, with exit code 2.

use clap::{Args, Parser, Subcommand};
use clap_complete::ArgValueCandidates;
use std::path::PathBuf;

use crate::complete::{lab_names, vm_names};
use crate::duration;

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
    /// Do not pipe long output into a pager.
    #[arg(long, global = true)]
    pub no_pager: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Link {
    #[command(subcommand)]
    pub set: Option<LinkSet>,
    /// One end, as VM:ethN.
    #[arg(value_name = "A:ethN", required = true)]
    pub a: Option<String>,
    /// The other end, as VM:ethN.
    #[arg(value_name = "B:ethN", required = true)]
    pub b: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum LinkSet {
    /// Suspend the cable on an adapter (nothing passes, both guests keep their carrier), or
    /// make it pass again.
    Set {
        /// The adapter, as VM:ethN.
        #[arg(value_name = "VM:ethN")]
        end: String,
        state: LinkState,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LinkState {
    /// Nothing passes, either way.
    Suspended,
    /// Frames pass.
    Active,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the VMs.
    List(List),
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
    /// Stop VMs as each one's OnStop says (power-off, shutdown or save-state), and return
    /// once they are stopped.
    Stop(Stop),
    /// Power VMs off at once, whatever their OnStop says (a shutdown under way ends too).
    Poweroff(Vms),
    /// Discard the saved state of stopped VMs: their next start boots afresh.
    DiscardState(Vms),
    /// Pause VMs.
    Suspend(Vms),
    /// Resume paused VMs.
    Resume(Vms),
    /// Reset VMs, as the reset button does.
    Reload(Vms),
    /// Return stopped VMs to their initial state: their own disks, UEFI variables and TPM
    /// state are made again at the next start; settings, ports and links stay.
    ResetDisks(Vms),
    /// Repair a stopped VM's own disks (qemu-img check -r all); prints each file repaired.
    RepairDisks {
        /// The VM's name or id.
        #[arg(add = ArgValueCandidates::new(vm_names))]
        vm: String,
    },
    /// Grow a disk of a VM (running or stopped) to SIZE.
    ResizeDisk {
        /// The VM's name or id.
        #[arg(add = ArgValueCandidates::new(vm_names))]
        vm: String,
        /// The disk.
        #[arg(value_parser = ["hda", "hdb", "hdc", "hdd"])]
        disk: String,
        /// Its new size: bytes, or with a K, M, G or T suffix (20G).
        #[arg(value_parser = crate::contract::bytes)]
        size: u64,
    },
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
    /// Link two adapters with a cable (a UDP tunnel each way): A:ethN B:ethM; or, with
    /// `link set`, suspend a cable or make it pass again.
    Link(Link),
    /// Remove the cable on an adapter, both of its ends.
    Unlink {
        /// The adapter, as VM:ethN.
        #[arg(value_name = "VM:ethN")]
        end: String,
    },
    /// List the cables between VMs, and those to UDP peers elsewhere.
    Links {
        /// Only the cables of this lab's VMs.
        #[arg(long, value_name = "NAME", add = ArgValueCandidates::new(lab_names))]
        lab: Option<String>,
        #[command(flatten)]
        json: Json,
    },
    /// Bring a lab up as its file says: create, configure, wire and start what differs.
    Up(Up),
    /// Stop every VM of a lab as each one's OnStop says, keeping their disks and cables.
    Down(Down),
    /// Delete every VM of a lab and their disks.
    Destroy {
        #[command(flatten)]
        lab: LabRef,
        /// Do not ask.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Draw a lab (from its file, or as the daemon wires it) as Graphviz dot or Mermaid.
    Graph(Graph),
    /// Print the values of properties of a VM, one a line.
    Get(Get),
    /// Attach to a VM's serial console (Ctrl-] detaches).
    Console(Console),
    /// Capture an adapter's frames as pcap, to stdout (`| wireshark -k -i -`) or a file,
    /// until interrupted; a capture it starts, it stops.
    Capture {
        /// The adapter, as VM:ethN.
        #[arg(value_name = "A:ethN")]
        end: String,
        /// Write the frames to FILE instead of stdout.
        #[arg(short = 'w', long, value_name = "FILE")]
        write: Option<String>,
    },
    /// Print VM events as they happen, until interrupted.
    Watch(Watch),
    /// Wait until VMs are in a state and/or their console printed something.
    Wait(Wait),
}

#[derive(Debug, Args)]
pub struct Up {
    /// The lab file (YAML).
    pub file: PathBuf,
    /// Delete the lab's VMs that the file does not have.
    #[arg(long)]
    pub prune: bool,
    /// Then wait until every node runs and its console printed what its `ready` says.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (90s, 2m, 1h30m, or seconds); no limit without.
    #[arg(long, value_name = "TIME", value_parser = duration::parse, requires = "wait")]
    pub timeout: Option<std::time::Duration>,
    #[command(flatten)]
    pub json: Json,
}

#[derive(Debug, Args)]
pub struct Stop {
    #[command(flatten)]
    pub vms: Vms,
    /// Power off each VM that is not stopped after this long (90s, 2m, or seconds), and say
    /// so; no limit without, or with infinity. A save (OnStop save-state) is not cut short:
    /// the VM's StopTimeout bounds it.
    #[arg(long, value_name = "TIME", value_parser = duration::parse)]
    pub timeout: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct Down {
    #[command(flatten)]
    pub lab: LabRef,
    /// Power every VM off at once, whatever its OnStop says.
    #[arg(long, conflicts_with = "timeout")]
    pub poweroff: bool,
    /// Power off each VM that is not stopped after this long (90s, 2m, or seconds), and say
    /// so; no limit without, or with infinity. A save (OnStop save-state) is not cut short:
    /// the VM's StopTimeout bounds it.
    #[arg(long, value_name = "TIME", value_parser = duration::parse)]
    pub timeout: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct List {
    /// Only the VMs of this lab (their Project).
    #[arg(long, value_name = "NAME", add = ArgValueCandidates::new(lab_names))]
    pub lab: Option<String>,
    #[command(flatten)]
    pub json: Json,
}

/// A lab, by its file or by its name (the VMs' Project).
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct LabRef {
    /// The lab file (YAML).
    pub file: Option<PathBuf>,
    /// The lab's name, without its file.
    #[arg(long, value_name = "NAME", add = ArgValueCandidates::new(lab_names))]
    pub lab: Option<String>,
}

#[derive(Debug, Args)]
pub struct Graph {
    #[command(flatten)]
    pub lab: LabRef,
    #[arg(long, value_enum, default_value = "dot")]
    pub format: crate::lab::graph::Format,
}

#[derive(Debug, Args)]
pub struct Get {
    /// The VM's name or id.
    #[arg(add = ArgValueCandidates::new(vm_names))]
    pub vm: String,
    /// The properties, by their D-Bus names.
    #[arg(required = true, value_name = "PROP")]
    pub properties: Vec<String>,
    #[command(flatten)]
    pub json: Json,
}

#[derive(Debug, Args)]
pub struct Console {
    /// The VM's name or id.
    #[arg(add = ArgValueCandidates::new(vm_names))]
    pub vm: String,
    /// Do not print what the guest printed before (the scrollback) first.
    #[arg(long)]
    pub no_replay: bool,
    /// Only watch: what is typed is not sent to the guest.
    #[arg(long)]
    pub read_only: bool,
}

#[derive(Debug, Args)]
pub struct Watch {
    /// Only these VMs (names or ids); all without.
    #[arg(value_name = "VM", add = ArgValueCandidates::new(vm_names))]
    pub vms: Vec<String>,
    /// Only the VMs of this lab (their Project).
    #[arg(long, value_name = "NAME", add = ArgValueCandidates::new(lab_names))]
    pub lab: Option<String>,
    /// Print each event as one JSON object a line.
    #[arg(long)]
    pub json: bool,
}

/// The states of the contract (State, dbus/org.gns3.Qemu.VM.xml).
pub const STATES: [&str; 5] = ["stopped", "starting", "running", "paused", "stopping"];

#[derive(Debug, Args)]
pub struct Wait {
    /// The VMs' names or ids.
    #[arg(required = true, value_name = "VM", add = ArgValueCandidates::new(vm_names))]
    pub vms: Vec<String>,
    /// The state to wait for (running without --state or --console).
    #[arg(long, value_name = "STATE", value_parser = STATES)]
    pub state: Option<String>,
    /// A regular expression the console's output must match (what it printed before counts).
    #[arg(long, value_name = "REGEX")]
    pub console: Option<String>,
    /// Give up after this long (90s, 2m, 1h30m, 500ms, or seconds); no limit without, or
    /// with infinity.
    #[arg(long, value_name = "TIME", value_parser = duration::parse)]
    pub timeout: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct Json {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Which VMs: named, those of a lab, or all; exactly one of the three.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Vms {
    /// The VMs' names or ids.
    #[arg(value_name = "VM", add = ArgValueCandidates::new(vm_names))]
    pub vms: Vec<String>,
    /// Every VM of this lab (their Project).
    #[arg(long, value_name = "NAME", add = ArgValueCandidates::new(lab_names))]
    pub lab: Option<String>,
    /// Every VM.
    #[arg(long)]
    pub all: bool,
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
