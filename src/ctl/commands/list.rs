//! `list`: every VM from one GetManagedObjects call, as a table or as JSON (every property
//! of each VM, and its object path).

use crate::error::Result;
use crate::output;
use crate::snapshot::{Snapshot, Vm};

const HEADER: [&str; 7] = [
    "NAME", "LAB", "STATE", "CONSOLE", "RAM", "ADAPTERS", "LINKS",
];
const NUMBERS: [&str; 4] = ["CONSOLE", "RAM", "ADAPTERS", "LINKS"];

/// The table's row: LAB the Project, RAM in MiB with its unit, LINKS the number of tunnels.
fn row(vm: &Vm) -> Vec<String> {
    vec![
        vm.name(),
        // An empty cell is "-", as in systemd's tables.
        match vm.project() {
            p if p.is_empty() => "-".to_string(),
            p => p,
        },
        vm.state(),
        vm.get("ConsolePort"),
        format!("{}M", vm.get("Ram")),
        vm.get("Adapters"),
        vm.tunnels().len().to_string(),
    ]
}

pub async fn run(
    conn: &zbus::Connection,
    as_json: bool,
    lab: Option<&str>,
    legend: bool,
) -> Result<()> {
    let snapshot = Snapshot::read(conn).await?;
    let vms = snapshot.select(lab)?;
    if as_json {
        return output::print_json(&vms.iter().map(|vm| vm.json()).collect());
    }
    let n = vms.len();
    let rows: Vec<Vec<String>> = vms.iter().map(|vm| row(vm)).collect();
    let mut out = output::table(&HEADER, &NUMBERS, rows.clone(), legend);
    if output::stdout_colour() {
        out = output::colour_column(&out, &HEADER, &rows, legend, 2, output::state_colour);
    }
    if legend {
        out.push_str(&format!("\n{} listed.\n", output::count(n, "VM", "VMs")));
    }
    output::print(&out)
}
