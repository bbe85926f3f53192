//! Every VM as one GetManagedObjects call shows it: what `list`, `links`, `watch` and the lab
//! commands read, so that they see one moment of the daemon rather than a call per VM.

use std::collections::HashMap;
use zbus::{OwnedObjectPath, OwnedVariant, Variant};

use crate::error::{Error, Result};
use crate::links::{self, Link, Port, Tunnel};
use crate::managed::{self, Keep};
use crate::output::{json, text};
use crate::proxies::{ManagerProxy, VmProxy};

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

/// Every VM, by name, with every property.
pub async fn vms(conn: &zbus::Connection) -> Result<Vec<Vm>> {
    vms_keeping(conn, Keep::All).await
}

/// Every VM, by name, with the properties `keep` names.
pub async fn vms_keeping(conn: &zbus::Connection, keep: Keep) -> Result<Vec<Vm>> {
    let mut out: Vec<Vm> = managed::vms(conn, keep)
        .await?
        .into_iter()
        .map(|(path, properties)| Vm { path, properties })
        .collect();
    out.sort_by_cached_key(Vm::name);
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
    /// The daemon's UdpHost: where tunnels to its own VMs are sent.
    pub here: String,
}

impl Snapshot {
    pub async fn read(conn: &zbus::Connection) -> Result<Snapshot> {
        Self::read_keeping(conn, Keep::All).await
    }

    /// The snapshot with only the properties `keep` names.
    pub async fn read_keeping(conn: &zbus::Connection, keep: Keep) -> Result<Snapshot> {
        let vms = vms_keeping(conn, keep).await?;
        let here = ManagerProxy::builder(conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(Error::Connect)?
            .udp_host()
            .await
            .map_err(Error::call("read the daemon's UdpHost".to_string()))?;
        Ok(Snapshot { vms, here })
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
        links::links(&tunnels, &self.here)
    }

    /// The link on `port`, if it has one.
    pub fn link_on(&self, port: &Port) -> Option<Link> {
        self.links().into_iter().find(|l| l.ports().contains(&port))
    }
}
