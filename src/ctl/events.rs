//! What `watch`, `wait` and the GNS3 compute's notification socket hear: one match rule for
//! every signal of the daemon under its root path (ObjectManager's InterfacesAdded/Removed,
//! each VM's PropertiesChanged), added before the snapshot (GetManagedObjects) is read, so
//! that nothing happens unheard between.

use futures_util::StreamExt;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use zbus::message::Type;
use zbus::{MatchRule, Message, MessageStream, OwnedObjectPath, OwnedVariant};

use crate::contract::{SERVICE, VM_INTERFACE};
use crate::error::{Error, Result};

const ROOT: &str = "/org/gns3/Qemu";
/// Signals kept while the snapshot is read, or while printing lags: a lab's worth of
/// starts at once.
const QUEUED: usize = 4096;

/// A VM's event.
#[derive(Debug)]
pub enum Event {
    Added {
        path: String,
        properties: HashMap<String, OwnedVariant>,
    },
    Removed {
        path: String,
    },
    Changed {
        path: String,
        changed: HashMap<String, OwnedVariant>,
        invalidated: Vec<String>,
    },
}

/// The stream of the daemon's signals: ONE AddMatch, `type='signal',sender='org.gns3.Qemu',
/// path_namespace='/org/gns3/Qemu'`.
pub async fn subscribe(conn: &zbus::Connection) -> Result<MessageStream> {
    let rule = MatchRule::builder()
        .msg_type(Type::Signal)
        .sender(SERVICE)
        .path_namespace(ROOT)
        .build()
        .map_err(Error::call("subscribe to the VMs' events"))?;
    MessageStream::for_match_rule(rule, conn, NonZeroUsize::new(QUEUED))
        .await
        .map_err(Error::call("subscribe to the VMs' events"))
}

/// The next VM event of `stream`; an error once the connection is gone.
pub async fn next(stream: &mut MessageStream) -> Result<Event> {
    while let Some(message) = stream.next().await {
        let message = message.map_err(Error::call("read the VMs' events"))?;
        if let Some(event) = event(&message) {
            return Ok(event);
        }
    }
    Err(Error::call("read the VMs' events")(zbus::Error::Failure(
        "the connection to the bus was closed".into(),
    )))
}

/// `message` as a VM's event, if it is one.
fn event(message: &Message) -> Option<Event> {
    let header = message.header();
    let interface = header.interface()?.as_str();
    let member = header.member()?.as_str();
    let body = message.body();
    match (interface, member) {
        ("org.freedesktop.DBus.ObjectManager", "InterfacesAdded") => {
            type Added = (
                OwnedObjectPath,
                HashMap<String, HashMap<String, OwnedVariant>>,
            );
            let (path, mut interfaces) = body.deserialize::<Added>().ok()?;
            let properties = interfaces.remove(VM_INTERFACE)?;
            Some(Event::Added {
                path: path.to_string(),
                properties,
            })
        }
        ("org.freedesktop.DBus.ObjectManager", "InterfacesRemoved") => {
            let (path, interfaces) = body.deserialize::<(OwnedObjectPath, Vec<String>)>().ok()?;
            interfaces
                .iter()
                .any(|i| i == VM_INTERFACE)
                .then(|| Event::Removed {
                    path: path.to_string(),
                })
        }
        ("org.freedesktop.DBus.Properties", "PropertiesChanged") => {
            type Changed = (String, HashMap<String, OwnedVariant>, Vec<String>);
            let (iface, changed, invalidated) = body.deserialize::<Changed>().ok()?;
            let path = header.path()?.to_string();
            (iface == VM_INTERFACE).then_some(Event::Changed {
                path,
                changed,
                invalidated,
            })
        }
        _ => None,
    }
}

/// A VM's id, the last part of its path: its name where nothing else is known.
pub fn id_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}
