//! GNS3's ids (projects and nodes: UUIDs the controller picks) and the daemon's object paths,
//! which carry a VM's id as 32 hex digits.

use std::fmt;
use zbus::OwnedObjectPath;

/// A UUID, written as GNS3 writes it: lower case, with hyphens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(uuid::Uuid);

impl Id {
    pub fn parse(s: &str) -> Result<Id, uuid::Error> {
        uuid::Uuid::try_parse(s).map(Id)
    }

    pub fn simple(self) -> String {
        self.0.simple().to_string()
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The object path of the VM whose Id is `id` (dbus/org.gns3.Qemu.Manager.xml).
pub fn vm_path(id: Id) -> OwnedObjectPath {
    // 32 hex digits after a fixed prefix: always a valid object path.
    zbus::ObjectPath::from_string_unchecked(format!("/org/gns3/Qemu/vm/{}", id.simple())).into()
}

/// The id of the VM at `path`, if it is one of the daemon's VMs.
pub fn vm_id(path: &str) -> Option<Id> {
    path.strip_prefix("/org/gns3/Qemu/vm/")
        .and_then(|hex| Id::parse(hex).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_id_is_its_vms_path_and_back() {
        let id = Id::parse("8C428B23-DC77-4CA6-B724-EA8E4F23EFF4").unwrap();
        assert_eq!(id.to_string(), "8c428b23-dc77-4ca6-b724-ea8e4f23eff4");
        let path = vm_path(id);
        assert_eq!(
            path.as_str(),
            "/org/gns3/Qemu/vm/8c428b23dc774ca6b724ea8e4f23eff4"
        );
        assert_eq!(vm_id(path.as_str()), Some(id));
        assert_eq!(vm_id("/org/gns3/Qemu"), None);
        assert!(Id::parse("../x").is_err());
    }
}
