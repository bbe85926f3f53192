//! `org.freedesktop.DBus.ObjectManager` at `/org/gns3/Qemu`: the VMs, for clients that
//! follow objects (GLib's GDBusObjectManagerClient, busctl, applets).
//!
//! zbus's own `fdo::ObjectManager` answers GetManagedObjects with every node beneath it, so it
//! would list `/org/gns3/Qemu/vm`, the node that only holds the VMs, as an object with no
//! interfaces, and GLib's client shows it as one. This one lists the VMs. zbus recognises an
//! ObjectManager by its interface name, so it still emits InterfacesAdded and
//! InterfacesRemoved itself whenever a VM's object is added or removed below.
//!
//! Both answer with the VM's GetAll (`Checked`): GetManagedObjects as the caller asking may
//! read it, and InterfacesAdded, a signal every local user hears, as no caller, so with the
//! properties only drivers read (`Table::DRIVERS_ONLY`) empty for everyone; a driver reads
//! them with Get, GetAll or GetManagedObjects.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use zbus::message::Header;
use zbus::names::InterfaceName;
use zbus::object_server::{Interface, SignalEmitter};
use zbus::{fdo, interface, Connection, ObjectPath, ObjectServer, Variant};

use super::checked::Checked;
use super::table::Table;
use super::vm::Vm;
use crate::manager::Manager;

pub struct Objects {
    pub(super) manager: Arc<Manager>,
}

impl Table for Objects {}

#[interface(
    name = "org.freedesktop.DBus.ObjectManager",
    introspection_docs = false
)]
impl Objects {
    async fn get_managed_objects(
        &self,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> fdo::Result<fdo::ManagedObjects> {
        let mut objects = fdo::ManagedObjects::new();
        for handle in self.manager.list() {
            let id = handle.view().id.clone();
            let path = super::vm_path(&id).map_err(|e| fdo::Error::Failed(e.to_string()))?;
            // A VM deleted since the list was taken is no longer there to list.
            let Ok(vm) = server.interface::<_, Checked<Vm>>(&path).await else {
                continue;
            };
            let emitter = SignalEmitter::new(conn, path.clone())?;
            let properties = vm
                .get()
                .await
                .get_all(server, conn, Some(&header), &emitter)
                .await?;
            let interfaces = [(Checked::<Vm>::name().into(), properties)].into();
            objects.insert(path, interfaces);
        }
        Ok(objects)
    }

    #[zbus(signal)]
    async fn interfaces_added(
        emitter: &SignalEmitter<'_>,
        object_path: ObjectPath<'_>,
        interfaces_and_properties: HashMap<InterfaceName<'_>, HashMap<&str, Variant<'_>>>,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn interfaces_removed(
        emitter: &SignalEmitter<'_>,
        object_path: ObjectPath<'_>,
        interfaces: Cow<'_, [InterfaceName<'_>]>,
    ) -> zbus::Result<()>;
}
