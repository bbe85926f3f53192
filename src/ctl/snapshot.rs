//! Every VM as one GetManagedObjects call shows it: what `list`, `links` and the lab commands
//! read, so that they see one moment of the daemon rather than a call per VM.

use std::collections::HashMap;
use zbus::fdo::ObjectManagerProxy;
use zbus::{OwnedObjectPath, OwnedVariant, Variant};

use crate::error::{Error, Result};
use crate::links::Tunnel;
use crate::output::{json, text};

const VM_INTERFACE: &str = "org.gns3.Qemu.VM";

/// One VM: its object path and properties.
#[derive(Debug)]
pub struct Vm {
    pub path: OwnedObjectPath,
    pub properties: HashMap<String, OwnedVariant>,
}

impl Vm {
    /// Property `name` as `show` prints it ("" if the VM has none).
    pub fn get(&self, name: &str) -> String {
        self.properties
            .get(name)
            .map(|v| text(v))
            .unwrap_or_default()
    }

    pub fn name(&self) -> String {
        self.get("Name")
    }

    pub fn project(&self) -> String {
        self.get("Project")
    }

    pub fn state(&self) -> String {
        self.get("State")
    }

    /// The VM's tunnels, each with the VM's name.
    pub fn tunnels(&self) -> Vec<Tunnel> {
        let Some(Variant::Array(a)) = self.properties.get("Tunnels").map(|v| &**v) else {
            return Vec::new();
        };
        a.iter()
            .filter_map(|t| {
                let Variant::Structure(s) = t else {
                    return None;
                };
                match s.fields() {
                    [Variant::U32(adapter), Variant::U16(local), Variant::Str(host), Variant::U16(remote)] => {
                        Some(Tunnel {
                            vm: self.name(),
                            adapter: *adapter,
                            local: *local,
                            host: host.to_string(),
                            remote: *remote,
                        })
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// Every property as JSON, and the object path.
    pub fn json(&self) -> serde_json::Value {
        let mut out: serde_json::Map<String, serde_json::Value> = self
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), json(v)))
            .collect();
        out.insert(
            "ObjectPath".into(),
            serde_json::Value::from(self.path.as_str()),
        );
        out.into()
    }
}

/// Every VM, by name.
pub async fn vms(conn: &zbus::Connection) -> Result<Vec<Vm>> {
    let om = ObjectManagerProxy::builder(conn)
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
            Some(Vm { path, properties })
        })
        .collect();
    out.sort_by_key(Vm::name);
    Ok(out)
}
