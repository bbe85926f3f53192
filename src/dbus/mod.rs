//! The face of the daemon on D-Bus: it translates calls into commands for the core and the
//! core's answers and errors back, and holds no logic of its own.

pub mod caller;
pub mod checked;
pub mod console;
pub mod error;
pub mod listed;
pub mod managed;
pub mod manager;
pub mod mirror;
pub mod objects;
pub mod raw;
pub mod settings;
pub mod table;
pub mod vm;

use std::collections::HashMap;
use std::sync::Arc;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, ObjectServer};
use zbus::{OwnedObjectPath, OwnedVariant};

use self::checked::Checked;
use self::error::Error;
use self::vm::Vm;
use crate::manager::Manager;
use crate::vm::Setting;

pub const BUS_NAME: &str = "org.gns3.Qemu";
pub const MANAGER_PATH: &str = "/org/gns3/Qemu";

/// The read-only properties of org.gns3.Qemu.VM.
pub const READ_ONLY: [&str; 12] = [
    "Id",
    "Project",
    "State",
    "Pid",
    "Accelerated",
    "Tunnels",
    "Links",
    "ExitStatus",
    "LastError",
    "ConsoleViewers",
    "Captures",
    "SavedState",
];

pub fn vm_path(id: &str) -> Result<OwnedObjectPath, Error> {
    OwnedObjectPath::try_from(format!("{MANAGER_PATH}/vm/{id}"))
        .map_err(|e| Error::Internal(format!("VM id {id} makes no object path: {e}")))
}

/// Splits CreateVM/Configure settings into VM settings and the `extra` keys allowed (as
/// strings).
fn parse_settings(
    settings: &HashMap<String, OwnedVariant>,
    extra: &[&str],
) -> Result<(Vec<Setting>, HashMap<String, String>), Error> {
    let mut changes = Vec::new();
    let mut extras = HashMap::new();
    // Sorted, so that the first bad setting reported is the same on every call.
    let mut keys: Vec<&String> = settings.keys().collect();
    keys.sort();
    for key in keys {
        let value = &settings[key];
        if extra.contains(&key.as_str()) {
            let s: &str = value.downcast_ref().map_err(|_| {
                Error::InvalidArgument(format!(
                    "{key} takes a value of D-Bus type 's', not '{}'",
                    value.value_signature()
                ))
            })?;
            extras.insert(key.clone(), s.to_string());
        } else {
            changes.push(settings::parse(key, value)?);
        }
    }
    Ok((changes, extras))
}

/// Puts a VM on the bus: its object, wrapped in [`Checked`] (announced through the
/// ObjectManager once that exists), and the task mirroring its changes as
/// PropertiesChanged.
pub async fn export(conn: &Connection, vm: Vm) -> zbus::Result<OwnedObjectPath> {
    let id = vm.handle.view().id.clone();
    let path = vm_path(&id).map_err(|e| zbus::Error::Failure(e.to_string()))?;
    let server = conn.object_server();
    server.at(&path, Checked::new(vm.clone())).await?;
    let emitter = SignalEmitter::new(conn, path.clone())?.into_owned();
    tokio::spawn(mirror::mirror(vm, conn.clone(), emitter));
    Ok(path)
}

pub async fn unexport(server: &ObjectServer, id: &str) {
    let Ok(path) = vm_path(id) else { return };
    if let Err(e) = server.remove::<Checked<Vm>, _>(&path).await {
        tracing::warn!(vm_id = %id, "cannot remove the VM's object: {e}");
    }
    let objects = server.interface::<_, Checked<objects::Objects>>(MANAGER_PATH);
    if let Ok(objects) = objects.await {
        objects.get().await.inner().forget(id).await;
    }
    let manager = server.interface::<_, Checked<manager::ManagerIface>>(MANAGER_PATH);
    if let Ok(manager) = manager.await {
        manager.get().await.inner().rows.forget(id);
    }
}

/// Serves the manager and every VM, then takes the bus name: no call can arrive before
/// the objects exist.
pub async fn serve(
    conn: &Connection,
    manager: Arc<Manager>,
    console_host: String,
) -> zbus::Result<()> {
    caller::watch(conn).await;
    let server = conn.object_server();
    server
        .at(
            MANAGER_PATH,
            Checked::new(manager::ManagerIface {
                manager: manager.clone(),
                console_host,
                rows: listed::Rows::default(),
            }),
        )
        .await?;
    // The VMs first, then the ObjectManager above them, as zbus's documentation asks: the
    // ObjectManager announces what it finds when it is added, before the name is ours, so
    // no client that follows org.gns3.Qemu hears of VMs that were there all along.
    for handle in manager.list() {
        export(
            conn,
            Vm {
                handle,
                manager: manager.clone(),
            },
        )
        .await?;
    }
    // The standard interfaces each node has (Properties, Introspectable, Peer) are zbus's:
    // replacing one on a VM's node would be announced as removed and added again.
    server
        .at(MANAGER_PATH, Checked::new(objects::Objects::new(manager)))
        .await?;
    conn.request_name_with_flags(BUS_NAME, zbus::fdo::RequestNameFlags::DO_NOT_QUEUE)
        .await?;
    Ok(())
}
