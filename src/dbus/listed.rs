//! ListVMs' reply from each VM's row kept serialized, so that listing 10 000 VMs copies
//! 1 MiB of bytes instead of copying and serializing 40 000 strings again (20-23 ms of the
//! daemon's CPU per call before, and not flat per VM; see the benchmark's `scale` section).
//!
//! A row is written again when the manager tells its VM changed ([`changes`]): a VM's name or
//! state changed before a call is in the reply. Looking at each VM's view to find out, as
//! GetManagedObjects' entries do, costs a cache miss or more per VM, 10 ms of 10 000 VMs.

use std::collections::BTreeMap;
use std::sync::Mutex;

use zbus::fdo;

use super::raw;
use crate::lock::lock;
use crate::manager::Manager;
use crate::vm::changes::{self, Since};
use crate::vm::{Handle, State};

/// The body's signature: (id, name, state, object path) of each VM.
pub const SIGNATURE: &str = "a(ssso)";

/// Every VM's row, in id order.
#[derive(Default)]
pub struct Rows {
    /// Held for a whole reply.
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    /// None until the first reply reads every VM.
    changes: Option<changes::Reader>,
    rows: BTreeMap<String, Box<[u8]>>,
    /// The rows' bytes, padding included.
    size: usize,
}

impl Rows {
    /// Drops a deleted VM's row at once, rather than at the next reply: with thousands of VMs
    /// deleted, their bytes would stay held until someone asks again.
    pub fn forget(&self, id: &str) {
        lock(&self.table).rows.remove(id);
    }

    /// The body of ListVMs' reply: every VM of `manager`, in id order.
    pub fn body(&self, manager: &Manager) -> fdo::Result<Vec<u8>> {
        let mut table = lock(&self.table);
        let Table {
            changes,
            rows,
            size,
        } = &mut *table;
        let since = match changes {
            Some(changes) => changes.since(),
            None => Since::Any,
        };
        match since {
            Since::These(ids) => {
                for id in ids {
                    match manager.with(&id, row_of) {
                        Some(row) => {
                            rows.insert(id.to_string(), row?);
                        }
                        None => {
                            rows.remove(&*id);
                        }
                    }
                }
            }
            Since::Any => {
                // Heard of from before the VMs are read: a change while they are is read
                // again next time.
                *changes = Some(manager.changes());
                *rows = manager.map::<_, fdo::Result<_>>(|handle| {
                    Ok((handle.view().id.clone(), row_of(handle)?))
                })?;
            }
        }
        let mut body = raw::Array::with_capacity(*size);
        for row in rows.values() {
            body.push(row);
        }
        *size = body.size();
        body.finish(|mib| {
            format!("the list of VMs takes {mib} MiB, past the 64 MiB one D-Bus reply holds")
        })
    }
}

fn row_of(handle: &Handle) -> fdo::Result<Box<[u8]>> {
    let view = handle.view();
    row(&view.id, &view.settings.name, view.state)
}

/// A VM's row, as ListVMs has it.
fn row(id: &str, name: &str, state: State) -> fdo::Result<Box<[u8]>> {
    let path = super::vm_path(id).map_err(|e| fdo::Error::Failed(e.to_string()))?;
    Ok(raw::piece(&(id, name, state.as_str(), path))?
        .bytes()
        .into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::OwnedObjectPath;

    type Decoded = Vec<(String, String, String, OwnedObjectPath)>;

    fn decode(body: &[u8]) -> Decoded {
        raw::read_back(body, SIGNATURE)
    }

    /// Rows of names of 1 to 16 letters, so that each padding between rows is exercised;
    /// laid end to end, they read back as the list zbus would have serialized.
    #[test]
    fn rows_laid_end_to_end_read_back_as_the_list() {
        let mut want = Decoded::new();
        let mut body = raw::Array::with_capacity(0);
        let mut lengths = std::collections::HashSet::new();
        for i in 0..16usize {
            let (id, name) = (format!("{i:032x}"), "r".repeat(i + 1));
            let state = State::ALL[i % State::ALL.len()];
            let row = row(&id, &name, state).unwrap();
            lengths.insert(row.len() % 8);
            body.push(&row);
            let path = super::super::vm_path(&id).unwrap();
            want.push((id, name, state.as_str().to_string(), path));
        }
        assert!(lengths.len() > 1, "remainders {lengths:?}");
        assert_eq!(decode(&body.finish(|_| String::new()).unwrap()), want);
    }
}
