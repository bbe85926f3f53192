//! `org.freedesktop.DBus.Properties` for the VM objects.
//!
//! zbus 5 answers a failed property `Set` with `org.freedesktop.zbus.Error` whatever the
//! setter returned, and the contract wants the named `org.gns3.Qemu.Error.*` for a bad
//! value. So each VM object gets this implementation in place of zbus's: `Get` and `GetAll`
//! go to the `#[interface]` getters of [`Vm`], `Set` goes to the VM's actor.

use std::collections::HashMap;
use zbus::message::Header;
use zbus::names::InterfaceName;
use zbus::object_server::{Interface, SignalEmitter};
use zbus::zvariant::{OwnedValue, Value};
use zbus::{fdo, interface, Connection, DBusError, ObjectServer};

use super::error::Error;
use super::vm::{Vm, INTERFACE};

pub struct VmProperties {
    pub(super) vm: Vm,
}

/// A standard error for an unknown interface or property, or one of ours for a bad value.
#[derive(Debug)]
pub enum PropertyError {
    Std(fdo::Error),
    Vm(Error),
}

impl DBusError for PropertyError {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<zbus::Message> {
        match self {
            PropertyError::Std(e) => e.create_reply(call),
            PropertyError::Vm(e) => e.create_reply(call),
        }
    }

    fn name(&self) -> zbus::names::ErrorName<'_> {
        match self {
            PropertyError::Std(e) => e.name(),
            PropertyError::Vm(e) => e.name(),
        }
    }

    fn description(&self) -> Option<&str> {
        match self {
            PropertyError::Std(e) => e.description(),
            PropertyError::Vm(e) => e.description(),
        }
    }
}

impl From<zbus::Error> for PropertyError {
    fn from(e: zbus::Error) -> Self {
        PropertyError::Std(fdo::Error::from(e))
    }
}

impl From<fdo::Error> for PropertyError {
    fn from(e: fdo::Error) -> Self {
        PropertyError::Std(e)
    }
}

type Result<T> = std::result::Result<T, PropertyError>;

/// The other interfaces of a VM object have no properties.
fn check_interface(name: &InterfaceName<'_>) -> Result<()> {
    if name.as_str() == INTERFACE {
        return Ok(());
    }
    Err(PropertyError::Std(fdo::Error::UnknownInterface(format!(
        "Unknown interface '{name}'; the VM's properties are on {INTERFACE}"
    ))))
}

#[interface(name = "org.freedesktop.DBus.Properties", introspection_docs = false)]
impl VmProperties {
    async fn get(
        &self,
        interface_name: InterfaceName<'_>,
        property_name: &str,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(header)] header: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<OwnedValue> {
        check_interface(&interface_name)?;
        let value = self
            .vm
            .get(property_name, server, conn, Some(&header), &emitter)
            .await;
        value
            .unwrap_or_else(|| {
                Err(fdo::Error::UnknownProperty(format!(
                    "Unknown property '{property_name}'"
                )))
            })
            .map_err(PropertyError::Std)
    }

    async fn get_all(
        &self,
        interface_name: InterfaceName<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(header)] header: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<HashMap<String, OwnedValue>> {
        check_interface(&interface_name)?;
        Ok(self
            .vm
            .get_all(server, conn, Some(&header), &emitter)
            .await?)
    }

    async fn set(
        &self,
        interface_name: InterfaceName<'_>,
        property_name: &str,
        value: Value<'_>,
    ) -> Result<()> {
        check_interface(&interface_name)?;
        if !super::settings::WRITABLE
            .iter()
            .any(|(k, _)| *k == property_name)
        {
            let readable = super::READ_ONLY.contains(&property_name);
            return Err(PropertyError::Std(if readable {
                fdo::Error::PropertyReadOnly(format!("Property '{property_name}' is read-only"))
            } else {
                fdo::Error::UnknownProperty(format!("Unknown property '{property_name}'"))
            }));
        }
        let setting = super::settings::parse(property_name, &value).map_err(PropertyError::Vm)?;
        self.vm.set(setting).await.map_err(PropertyError::Vm)
    }

    #[zbus(signal)]
    async fn properties_changed(
        emitter: &SignalEmitter<'_>,
        interface_name: InterfaceName<'_>,
        changed_properties: HashMap<&str, Value<'_>>,
        invalidated_properties: &[&str],
    ) -> zbus::Result<()>;
}
