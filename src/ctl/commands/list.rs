//! `list`: every VM from one GetManagedObjects call, as a table or as JSON (every property
//! of each VM, and its object path).

use std::collections::HashMap;
use zbus::fdo::ObjectManagerProxy;
use zbus::{OwnedVariant, Variant};

use crate::error::{Error, Result};
use crate::output::{self, json, text};

const VM_INTERFACE: &str = "org.gns3.Qemu.VM";
const HEADER: [&str; 7] = [
    "NAME", "LAB", "STATE", "CONSOLE", "RAM", "ADAPTERS", "LINKS",
];
const NUMBERS: [&str; 4] = ["CONSOLE", "RAM", "ADAPTERS", "LINKS"];

/// One VM: its object path and properties.
pub struct Vm {
    pub path: String,
    pub properties: HashMap<String, OwnedVariant>,
}

impl Vm {
    pub(super) fn get(&self, name: &str) -> String {
        self.properties
            .get(name)
            .map(|v| text(v))
            .unwrap_or_default()
    }

    /// The table's row: LAB the Project, RAM in MiB with its unit, LINKS the number of
    /// tunnels.
    pub fn row(&self) -> Vec<String> {
        let links = match self.properties.get("Tunnels").map(|v| &**v) {
            Some(Variant::Array(a)) => a.len(),
            _ => 0,
        };
        vec![
            self.get("Name"),
            // An empty cell is "-", as in systemd's tables.
            match self.get("Project") {
                p if p.is_empty() => "-".to_string(),
                p => p,
            },
            self.get("State"),
            self.get("ConsolePort"),
            format!("{}M", self.get("Ram")),
            self.get("Adapters"),
            links.to_string(),
        ]
    }

    pub fn json(&self) -> serde_json::Value {
        let mut out: serde_json::Map<String, serde_json::Value> = self
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), json(v)))
            .collect();
        out.insert(
            "ObjectPath".into(),
            serde_json::Value::from(self.path.clone()),
        );
        out.into()
    }
}

/// Every VM, by name, from one GetManagedObjects.
pub(super) async fn vms(conn: &zbus::Connection) -> Result<Vec<Vm>> {
    // No property cache: it would add a match rule of its own beside watch's one.
    let om = ObjectManagerProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .destination("org.gns3.Qemu")
        .path("/org/gns3/Qemu")
        .build()
        .await
        .map_err(Error::Connect)?;
    let objects = om
        .get_managed_objects()
        .await
        .map_err(|e| Error::call("list the VMs")(e.into()))?;
    let mut out: Vec<Vm> = objects
        .into_iter()
        .filter_map(|(path, mut ifaces)| {
            let properties = ifaces.remove(VM_INTERFACE)?;
            Some(Vm {
                path: path.to_string(),
                properties,
            })
        })
        .collect();
    out.sort_by_key(|vm| vm.get("Name"));
    Ok(out)
}

/// Every VM, or those of `lab` only (none is [`Error::NoVmInLab`]).
pub(super) async fn in_lab(conn: &zbus::Connection, lab: Option<&str>) -> Result<Vec<Vm>> {
    let mut vms = vms(conn).await?;
    if let Some(lab) = lab {
        vms.retain(|vm| vm.get("Project") == lab);
        if vms.is_empty() {
            return Err(Error::NoVmInLab(lab.to_string()));
        }
    }
    Ok(vms)
}

pub async fn run(
    conn: &zbus::Connection,
    as_json: bool,
    lab: Option<&str>,
    legend: bool,
) -> Result<()> {
    let vms = in_lab(conn, lab).await?;
    if as_json {
        return output::print_json(&vms.iter().map(Vm::json).collect());
    }
    let n = vms.len();
    let rows: Vec<Vec<String>> = vms.iter().map(Vm::row).collect();
    let mut out = output::table(&HEADER, &NUMBERS, rows.clone(), legend);
    if output::stdout_colour() {
        out = output::colour_column(&out, &HEADER, &rows, legend, 2, output::state_colour);
    }
    if legend {
        let noun = if n == 1 { "VM" } else { "VMs" };
        out.push_str(&format!("\n{n} {noun} listed.\n"));
    }
    output::print(&out)
}
