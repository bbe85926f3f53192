//! Which VMs changed, told to readers that keep something made of every VM (ListVMs' rows in
//! the D-Bus face), which would otherwise look at every VM's view to find the few that
//! changed: with 10 000 VMs, that look alone is a cache miss or more per VM, 10 ms a call.
//!
//! A VM's id is told after its view changed, once it is in the manager's list, and once it
//! is out of it. A reader that falls more than [`KEPT`] ids behind is told to look at every
//! VM again.
//!
//! An id is told as its 32 digits, held in the channel itself: an id on the heap, kept there
//! for readers, would pin the page it lies in once its VM and everything beside it is gone
//! (1 024 such pages, 4 MiB, after deleting 10 000 VMs).

use std::collections::HashSet;

use tokio::sync::{broadcast, watch};

use super::View;

/// Ids kept for readers between two of their reads.
const KEPT: usize = 1024;

/// A VM's id as told: None for one that is not 32 bytes long, which no VM's is (`normalize_id`),
/// and which readers take as "any may have changed".
type Told = Option<[u8; 32]>;

fn told(id: &str) -> Told {
    id.as_bytes().try_into().ok()
}

/// Where the changes are told: one for all VMs, in the VMs' shared context.
pub struct Changes {
    tx: broadcast::Sender<Told>,
}

impl Default for Changes {
    fn default() -> Self {
        Changes {
            tx: broadcast::Sender::new(KEPT),
        }
    }
}

impl Changes {
    /// Hears of every change from now on.
    pub fn reader(&self) -> Reader {
        Reader {
            rx: self.tx.subscribe(),
        }
    }

    /// VM `id` changed, was added or is gone.
    pub fn tell(&self, id: &str) {
        // No reader yet: nobody to tell.
        let _ = self.tx.send(told(id));
    }
}

/// What a reader is told changed since its last read.
#[derive(Debug, PartialEq)]
pub enum Since {
    /// The VMs of these ids.
    These(HashSet<String>),
    /// More than it was kept for: any VM may have.
    Any,
}

pub struct Reader {
    rx: broadcast::Receiver<Told>,
}

impl Reader {
    pub fn since(&mut self) -> Since {
        let mut these = HashSet::new();
        loop {
            match self.rx.try_recv() {
                Ok(Some(id)) => {
                    these.insert(String::from_utf8_lossy(&id).into_owned());
                }
                Ok(None) => {
                    self.rx = self.rx.resubscribe();
                    return Since::Any;
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    self.rx = self.rx.resubscribe();
                    return Since::Any;
                }
                Err(_) => return Since::These(these),
            }
        }
    }
}

/// A VM's view as its actor publishes it: to the view's receivers, and to the readers of
/// [`Changes`] when it changed.
pub struct Publisher {
    view: watch::Sender<View>,
    id: Told,
    changes: broadcast::Sender<Told>,
}

impl Publisher {
    pub fn new(view: View, changes: &Changes) -> Publisher {
        Publisher {
            id: told(&view.id),
            view: watch::Sender::new(view),
            changes: changes.tx.clone(),
        }
    }

    /// `modify`s the view, which tells whether it changed it.
    pub fn send_if_modified(&self, modify: impl FnOnce(&mut View) -> bool) -> bool {
        let changed = self.view.send_if_modified(modify);
        if changed {
            let _ = self.changes.send(self.id);
        }
        changed
    }

    pub fn subscribe(&self) -> watch::Receiver<View> {
        self.view.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ids: &[&str]) -> Since {
        Since::These(ids.iter().map(|&id| id.repeat(32)).collect())
    }

    #[test]
    fn a_reader_hears_each_id_told_since_once() {
        let changes = Changes::default();
        changes.tell(&"z".repeat(32));
        let mut reader = changes.reader();
        assert_eq!(reader.since(), ids(&[]));
        for id in ["a", "b", "a"] {
            changes.tell(&id.repeat(32));
        }
        assert_eq!(reader.since(), ids(&["a", "b"]));
        assert_eq!(reader.since(), ids(&[]));
    }

    #[test]
    fn a_reader_too_far_behind_is_told_any_then_hears_again() {
        let changes = Changes::default();
        let mut reader = changes.reader();
        for i in 0..=KEPT {
            changes.tell(&format!("{i:032x}"));
        }
        assert_eq!(reader.since(), Since::Any);
        assert_eq!(reader.since(), ids(&[]));
        changes.tell(&"c".repeat(32));
        assert_eq!(reader.since(), ids(&["c"]));
    }

    #[test]
    fn an_id_of_another_length_is_any() {
        let changes = Changes::default();
        let mut reader = changes.reader();
        changes.tell(&"a".repeat(32));
        changes.tell("short");
        assert_eq!(reader.since(), Since::Any);
    }
}
