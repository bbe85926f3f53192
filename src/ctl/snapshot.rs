//! Every VM as one GetManagedObjects call shows it: what `list`, `links`, `watch` and the lab
//! commands read, so that they see one moment of the daemon rather than a call per VM.

use std::collections::HashMap;
use zbus::fdo::ObjectManagerProxy;
use zbus::{OwnedObjectPath, OwnedVariant, Variant};

use crate::error::{Error, Result};
use crate::links::{self, Link, Port, Tunnel};
use crate::output::{json, text};
use crate::proxies::VmProxy;

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

    /// The VM's Adapters, or `default` if it shows none.
    pub fn adapters(&self, default: u32) -> u32 {
        crate::contract::as_u32(self.properties.get("Adapters")).unwrap_or(default)
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
            Some(Vm { path, properties })
        })
        .collect();
    out.sort_by_key(Vm::name);
    Ok(out)
}

/// The proxy of the VM at `path`, which caches nothing: each read is the daemon's answer.
pub async fn vm_at(conn: &zbus::Connection, path: OwnedObjectPath) -> Result<VmProxy<'static>> {
    VmProxy::builder(conn)
        .path(path)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(Error::Connect)
}

/// Every VM at one moment, and what they show together: the lab's members, the cables.
pub struct Snapshot {
    pub vms: Vec<Vm>,
}

impl Snapshot {
    pub async fn read(conn: &zbus::Connection) -> Result<Snapshot> {
        Ok(Snapshot {
            vms: vms(conn).await?,
        })
    }

    /// VM `name` (by name: lab files and endpoints name VMs so).
    pub fn vm(&self, name: &str) -> Result<&Vm> {
        self.vms
            .iter()
            .find(|vm| vm.name() == name)
            .ok_or_else(|| Error::NoSuchVm(name.to_string()))
    }

    /// The proxy of VM `name`.
    pub async fn proxy(&self, conn: &zbus::Connection, name: &str) -> Result<VmProxy<'static>> {
        vm_at(conn, self.vm(name)?.path.clone()).await
    }

    /// Every VM, or those of `lab` only (none is [`Error::NoVmInLab`]).
    pub fn select(&self, lab: Option<&str>) -> Result<Vec<&Vm>> {
        let Some(lab) = lab else {
            return Ok(self.vms.iter().collect());
        };
        let vms: Vec<&Vm> = self.vms.iter().filter(|vm| vm.project() == lab).collect();
        if vms.is_empty() {
            return Err(Error::NoVmInLab(lab.to_string()));
        }
        Ok(vms)
    }

    /// The names of `lab`'s VMs (none is [`Error::NoVmInLab`]).
    pub fn members(&self, lab: &str) -> Result<Vec<String>> {
        Ok(self.select(Some(lab))?.into_iter().map(Vm::name).collect())
    }

    pub fn links(&self) -> Vec<Link> {
        let tunnels: Vec<_> = self.vms.iter().flat_map(Vm::tunnels).collect();
        links::links(&tunnels)
    }

    /// The link on `port`, if it has one.
    pub fn link_on(&self, port: &Port) -> Option<Link> {
        self.links().into_iter().find(|l| l.ports().contains(&port))
    }
}
