//! `org.freedesktop.DBus.ObjectManager` at `/org/gns3/Qemu`: the VMs, for clients that
//! follow objects (GLib's GDBusObjectManagerClient, busctl, applets, gns3-qemuctl).
//!
//! zbus's own `fdo::ObjectManager` answers GetManagedObjects with every node beneath it, so it
//! would list `/org/gns3/Qemu/vm`, the node that only holds the VMs, as an object with no
//! interfaces, and GLib's client shows it as one. This one lists the VMs. zbus recognises an
//! ObjectManager by its interface name, so it still emits InterfacesAdded and
//! InterfacesRemoved itself whenever a VM's object is added or removed below.
//!
//! The interface is written by hand rather than by the macro because its one method replies
//! with bytes kept serialized ([`managed`](super::managed)), which a macro method, returning
//! a value to serialize, cannot. Its introspection data is zbus's, the same interface.
//!
//! Both answer with the VM's GetAll: GetManagedObjects as the caller asking may read it, and
//! InterfacesAdded, a signal every local user hears, as no caller, so with the properties
//! only drivers read (`Table::DRIVERS_ONLY`) empty for everyone; a driver reads them with
//! Get, GetAll or GetManagedObjects.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use async_trait::async_trait;
use zbus::message::{Header, Message};
use zbus::names::{InterfaceName, MemberName};
use zbus::object_server::{DispatchResult, Interface, SignalEmitter};
use zbus::{fdo, BoxDBusError, Connection, ObjectServer, OwnedVariant, Variant};

use super::caller;
use super::managed::{self, Entries};
use super::raw;
use super::table::Table;
use crate::manager::Manager;

const GET_MANAGED_OBJECTS: &str = "GetManagedObjects";

pub struct Objects {
    manager: Arc<Manager>,
    entries: Entries,
}

impl Objects {
    pub fn new(manager: Arc<Manager>) -> Objects {
        Objects {
            manager,
            entries: Entries::default(),
        }
    }

    /// A VM's object is gone: so is its entry.
    pub async fn forget(&self, id: &str) {
        self.entries.forget(id).await;
    }

    async fn reply(&self, conn: &Connection, msg: &Message) -> zbus::Result<()> {
        let driver = caller::is_driver(conn, Some(&msg.header())).await;
        let body = self.entries.body(&self.manager, conn, driver).await;
        raw::reply(conn, msg, body, managed::SIGNATURE).await
    }
}

impl Table for Objects {}

#[async_trait]
impl Interface for Objects {
    fn name() -> InterfaceName<'static> {
        fdo::ObjectManager::name()
    }

    async fn get(
        &self,
        _property_name: &str,
        _server: &ObjectServer,
        _connection: &Connection,
        _header: Option<&Header<'_>>,
        _emitter: &SignalEmitter<'_>,
    ) -> Option<Result<OwnedVariant, BoxDBusError>> {
        None
    }

    async fn get_all(
        &self,
        _server: &ObjectServer,
        _connection: &Connection,
        _header: Option<&Header<'_>>,
        _emitter: &SignalEmitter<'_>,
    ) -> fdo::Result<HashMap<String, OwnedVariant>> {
        Ok(HashMap::new())
    }

    fn set<'call>(
        &'call self,
        _property_name: &'call str,
        _value: &'call Variant<'_>,
        _server: &'call ObjectServer,
        _connection: &'call Connection,
        _header: Option<&'call Header<'_>>,
        _emitter: &'call SignalEmitter<'_>,
    ) -> DispatchResult<'call> {
        DispatchResult::NotFound
    }

    async fn set_mut(
        &mut self,
        _property_name: &str,
        _value: &Variant<'_>,
        _server: &ObjectServer,
        _connection: &Connection,
        _header: Option<&Header<'_>>,
        _emitter: &SignalEmitter<'_>,
    ) -> Option<Result<(), BoxDBusError>> {
        None
    }

    fn call<'call>(
        &'call self,
        _server: &'call ObjectServer,
        connection: &'call Connection,
        msg: &'call Message,
        name: MemberName<'call>,
    ) -> DispatchResult<'call> {
        if name.as_str() != GET_MANAGED_OBJECTS {
            return DispatchResult::NotFound;
        }
        DispatchResult::Async(Box::pin(async move {
            self.reply(connection, msg)
                .await
                .map_err(|e| Box::new(fdo::Error::Failed(e.to_string())) as BoxDBusError)
        }))
    }

    fn call_mut<'call>(
        &'call mut self,
        _server: &'call ObjectServer,
        _connection: &'call Connection,
        _msg: &'call Message,
        _name: MemberName<'call>,
    ) -> DispatchResult<'call> {
        DispatchResult::NotFound
    }

    fn introspect_to_writer(&self, writer: &mut dyn Write, level: usize) {
        fdo::ObjectManager.introspect_to_writer(writer, level);
    }
}
