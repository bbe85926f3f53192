//! One GetManagedObjects call, its reply decoded keeping only the properties a command shows:
//! `list`'s table reads 7 of each VM's 29, and the others are stepped over unread rather than
//! each copied into a variant and dropped again (two thirds of `list`'s time with 1 000 VMs;
//! see the benchmark's `cli` section).

use std::collections::HashMap;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use zbus::wire::Type;
use zbus::{DynamicType, OwnedObjectPath, OwnedVariant, Signature};

use crate::contract::VM_INTERFACE;
use crate::error::{Error, Result};

/// Which properties of each VM to keep.
#[derive(Clone, Copy, Debug)]
pub enum Keep {
    All,
    Only(&'static [&'static str]),
}

impl Keep {
    fn keeps(self, name: &str) -> bool {
        match self {
            Keep::All => true,
            Keep::Only(names) => names.contains(&name),
        }
    }
}

/// Every VM the daemon's ObjectManager lists: its path and the properties `keep` names.
pub async fn vms(conn: &zbus::Connection, keep: Keep) -> Result<Listed> {
    let reply = conn
        .call_method(
            Some("org.gns3.Qemu"),
            "/org/gns3/Qemu",
            Some("org.freedesktop.DBus.ObjectManager"),
            "GetManagedObjects",
            &(),
        )
        .await
        .map_err(Error::call("list the VMs"))?;
    let body = reply.body();
    let (vms, _) = body
        .data()
        .deserialize_with_seed(Objects(keep))
        .map_err(Error::call("read the list of VMs"))?;
    Ok(vms)
}

/// Each VM's path and properties.
pub type Listed = Vec<(OwnedObjectPath, HashMap<String, OwnedVariant>)>;

/// `a{oa{sa{sv}}}`: the VMs' paths and, of their interfaces, org.gns3.Qemu.VM's properties.
struct Objects(Keep);
/// `a{sa{sv}}`: one object's interfaces; the VM's properties if it has that interface.
struct Interfaces(Keep);
/// `a{sv}`: the properties `keep` names.
struct Properties(Keep);

impl DynamicType for Objects {
    fn signature(&self) -> Signature {
        <zbus::fdo::ManagedObjects as Type>::SIGNATURE.clone()
    }
}

impl<'de> DeserializeSeed<'de> for Objects {
    type Value = Listed;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Listed, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Objects {
    type Value = Listed;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("objects and their interfaces")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Listed, A::Error> {
        let mut vms = Vec::with_capacity(map.size_hint().unwrap_or(0));
        // Read as a string, not checked again: the bus checks each object path it carries.
        while let Some(path) = map.next_key::<&str>()? {
            if let Some(properties) = map.next_value_seed(Interfaces(self.0))? {
                let path = zbus::ObjectPath::from_str_unchecked(path).into();
                vms.push((path, properties));
            }
        }
        Ok(vms)
    }
}

impl<'de> DeserializeSeed<'de> for Interfaces {
    type Value = Option<HashMap<String, OwnedVariant>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Interfaces {
    type Value = Option<HashMap<String, OwnedVariant>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("interfaces and their properties")
    }
    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut vm = None;
        while let Some(interface) = map.next_key::<&str>()? {
            if interface == VM_INTERFACE {
                vm = Some(map.next_value_seed(Properties(self.0))?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(vm)
    }
}

impl<'de> DeserializeSeed<'de> for Properties {
    type Value = HashMap<String, OwnedVariant>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Properties {
    type Value = HashMap<String, OwnedVariant>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("properties")
    }
    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut properties = HashMap::with_capacity(match self.0 {
            Keep::All => map.size_hint().unwrap_or(0),
            Keep::Only(names) => names.len(),
        });
        while let Some(name) = map.next_key::<&str>()? {
            if self.0.keeps(name) {
                properties.insert(name.to_string(), map.next_value::<OwnedVariant>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(properties)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::wire::serialized::{Context, Data};
    use zbus::wire::{to_bytes, Str, LE};

    fn reply() -> Data<'static, 'static> {
        let vm: HashMap<&str, OwnedVariant> = HashMap::from([
            ("Name", OwnedVariant::from(Str::from("r1"))),
            ("Ram", OwnedVariant::from(512u32)),
            ("Options", OwnedVariant::from(Str::from("-nographic"))),
        ]);
        let other: HashMap<&str, OwnedVariant> =
            HashMap::from([("Name", OwnedVariant::from(Str::from("not a VM")))]);
        let objects = HashMap::from([
            (
                "/org/gns3/Qemu/vm/1",
                HashMap::from([(VM_INTERFACE, vm), ("org.example.Other", other.clone())]),
            ),
            (
                "/org/gns3/Qemu/x",
                HashMap::from([("org.example.Other", other)]),
            ),
        ]);
        let objects: HashMap<zbus::ObjectPath, _> = objects
            .into_iter()
            .map(|(p, i)| (zbus::ObjectPath::try_from(p).unwrap(), i))
            .collect();
        to_bytes(Context::new(LE, 0), &objects).unwrap()
    }

    #[test]
    fn only_the_vms_and_the_properties_asked_for_are_kept() {
        let data = reply();
        let (vms, read) = data
            .deserialize_with_seed(Objects(Keep::Only(&["Name", "Ram"])))
            .unwrap();
        assert_eq!(read, data.len());
        assert_eq!(vms.len(), 1);
        let (path, properties) = &vms[0];
        assert_eq!(path.as_str(), "/org/gns3/Qemu/vm/1");
        let mut names: Vec<&str> = properties.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, ["Name", "Ram"]);
        assert_eq!(u32::try_from(&properties["Ram"]).unwrap(), 512);
    }

    #[test]
    fn all_keeps_every_property() {
        let (vms, _) = reply().deserialize_with_seed(Objects(Keep::All)).unwrap();
        assert_eq!(vms[0].1.len(), 3);
        assert_eq!(
            <&str>::try_from(&vms[0].1["Options"]).unwrap(),
            "-nographic"
        );
    }
}
