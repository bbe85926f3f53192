//! GetManagedObjects' reply from each VM's entry kept serialized, so that listing 1 000 VMs
//! copies bytes instead of reading, boxing and serializing 30 000 properties again (66 ms of
//! the daemon's CPU per call before; see the benchmark's `cli` section).
//!
//! An entry is the VM's object path with its one interface and that interface's GetAll, as
//! zbus serializes them: once as drivers read it, and once as everyone else does (the
//! properties of [`Table::DRIVERS_ONLY`] empty; the same bytes when those are empty anyway).
//! It is read again when the VM's view has changed since it was written: the entry keeps a
//! receiver of the view and marks it seen before reading, so that a change published before
//! a call is in the reply, as it would be in a GetAll.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{watch, Mutex};
use zbus::object_server::SignalEmitter;
use zbus::wire::serialized::Data;
use zbus::wire::{ObjectPath, OwnedObjectPath, OwnedVariant};
use zbus::{fdo, Connection};

use super::checked::{self, Checked};
use super::raw;
use super::table;
use super::vm::Vm;
use crate::manager::Manager;
use crate::vm::View;

/// The body's signature: object path → interface → property → value.
pub const SIGNATURE: &str = "a{oa{sa{sv}}}";

/// Every VM's entry, by id.
#[derive(Default)]
pub struct Entries {
    /// Held for a whole reply: two calls at once would read the same views twice over.
    by_id: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    view: watch::Receiver<View>,
    driver: Data<'static, 'static>,
    outsider: Data<'static, 'static>,
}

impl Entries {
    /// Drops a deleted VM's entry at once, rather than at the next call: with thousands of
    /// VMs deleted, their bytes would stay held until someone asks again.
    pub async fn forget(&self, id: &str) {
        let mut by_id = self.by_id.lock().await;
        by_id.remove(id);
        // Nor should the table for them stay.
        if by_id.len() * 4 < by_id.capacity() {
            by_id.shrink_to_fit();
        }
    }

    /// The body of GetManagedObjects' reply: every VM of `manager`, as drivers read them when
    /// `driver`, else as everyone else does.
    pub async fn body(
        &self,
        manager: &Arc<Manager>,
        conn: &Connection,
        driver: bool,
    ) -> fdo::Result<Vec<u8>> {
        let mut by_id = self.by_id.lock().await;
        // The entries of VMs deleted since are left behind.
        let mut kept = HashMap::with_capacity(by_id.len());
        for handle in manager.list() {
            let id = handle.view().id.clone();
            let entry = match by_id.remove(&id) {
                Some(entry) if !entry.view.has_changed().unwrap_or(true) => entry,
                Some(_) | None => {
                    // Not listed before its object is there, as InterfacesAdded tells of it
                    // then.
                    let path =
                        super::vm_path(&id).map_err(|e| fdo::Error::Failed(e.to_string()))?;
                    let server = conn.object_server();
                    if server.interface::<_, Checked<Vm>>(&path).await.is_err() {
                        continue;
                    }
                    let mut view = handle.watch();
                    view.mark_unchanged();
                    let vm = Vm {
                        handle,
                        manager: manager.clone(),
                    };
                    Entry::read(vm, view, path, conn).await?
                }
            };
            kept.insert(id, entry);
        }
        *by_id = kept;
        body(by_id.values().map(|entry| {
            if driver {
                entry.driver.bytes()
            } else {
                entry.outsider.bytes()
            }
        }))
    }
}

impl Entry {
    async fn read(
        vm: Vm,
        view: watch::Receiver<View>,
        path: OwnedObjectPath,
        conn: &Connection,
    ) -> fdo::Result<Entry> {
        let emitter = SignalEmitter::new(conn, path.as_ref())?;
        let mut properties =
            table::get_all(&vm, conn.object_server(), conn, None, &emitter).await?;
        let driver = entry(&path, &properties)?;
        let hidden = checked::hide::<Vm>(&mut properties);
        let outsider = if hidden {
            entry(&path, &properties)?
        } else {
            driver.clone()
        };
        Ok(Entry {
            view,
            driver,
            outsider,
        })
    }
}

/// One entry of the reply, `{oa{sa{sv}}}`, serialized as the struct `(oa{sa{sv}})`, which
/// has a dict entry's layout.
fn entry(
    path: &ObjectPath<'_>,
    properties: &HashMap<String, OwnedVariant>,
) -> fdo::Result<Data<'static, 'static>> {
    let interfaces = HashMap::from([(super::vm::INTERFACE, properties)]);
    raw::piece(&(path, interfaces))
}

/// `entries` as an array of dict entries.
fn body<'a>(entries: impl ExactSizeIterator<Item = &'a [u8]>) -> fdo::Result<Vec<u8>> {
    // About 1 KiB a VM today.
    let mut body = raw::Array::with_capacity(entries.len() << 10);
    for entry in entries {
        body.push(entry);
    }
    // About 64 000 VMs as they are today.
    body.finish(|mib| {
        format!(
            "the VMs' properties take {mib} MiB, past the 64 MiB one D-Bus reply holds: \
             list them with Manager.ListVMs and read each with GetAll"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::wire::{Str, Variant};

    type Decoded = HashMap<String, HashMap<String, HashMap<String, OwnedVariant>>>;

    fn properties(name: &str, ram: u32, tunnels: usize) -> HashMap<String, OwnedVariant> {
        let tunnels: Vec<(u32, u16, String, u16)> = (0..tunnels as u32)
            .map(|i| (i, 20000 + i as u16, "127.0.0.1".to_string(), 21000))
            .collect();
        HashMap::from([
            (
                "Name".to_string(),
                OwnedVariant::from(Str::from(name.to_string())),
            ),
            ("Ram".to_string(), OwnedVariant::from(ram)),
            ("ConsolePort".to_string(), OwnedVariant::from(5000u16)),
            ("Accelerated".to_string(), OwnedVariant::from(true)),
            (
                "Tunnels".to_string(),
                OwnedVariant::try_from(Variant::from(tunnels)).unwrap(),
            ),
        ])
    }

    fn decode(body: &[u8]) -> Decoded {
        raw::read_back(body, SIGNATURE)
    }

    /// Entries of lengths that leave every remainder modulo 8, so that each padding is
    /// exercised; read back, they are the map they were made from. Those of one property,
    /// a name of 1 to 16 letters, have their lengths whatever order a map serializes in.
    #[test]
    fn entries_laid_end_to_end_read_back_as_the_map() {
        let mut want = Decoded::new();
        let mut entries = Vec::new();
        for i in 0..32 {
            let path = format!("/org/gns3/Qemu/vm/{i:x}{}", "a".repeat(i % 16));
            let props = if i < 16 {
                properties(&"r".repeat(i + 1), i as u32, i % 3)
            } else {
                let name = OwnedVariant::from(Str::from("r".repeat(i - 15)));
                HashMap::from([("Name".to_string(), name)])
            };
            let path = ObjectPath::try_from(path.as_str()).unwrap();
            entries.push(entry(&path, &props).unwrap());
            want.insert(
                path.to_string(),
                HashMap::from([(super::super::vm::INTERFACE.to_string(), props)]),
            );
        }
        let lengths: std::collections::HashSet<usize> =
            entries.iter().map(|e| e.len() % 8).collect();
        assert_eq!(lengths.len(), 8, "remainders {lengths:?}");
        let body = body(entries.iter().map(|e| e.bytes())).unwrap();
        assert_eq!(decode(&body), want);
    }

    #[test]
    fn no_entries_are_an_empty_array() {
        let body = body(std::iter::empty()).unwrap();
        assert_eq!(body, [0u8; 8]);
        assert!(decode(&body).is_empty());
    }
}
