//! Who sent a message: a driver (root or a member of gns3, [`access::may_drive`]) or anyone
//! else. [`Checked`](super::checked::Checked) asks only for the properties that drivers alone
//! read ([`Table::DRIVERS_ONLY`](super::table::Table::DRIVERS_ONLY)); every other property
//! is served without asking.
//!
//! The bus daemon knows the uid of each connection: GetConnectionCredentials(sender). dbus
//! 1.14 (Debian 12) answers with UnixUserID and ProcessID only; later versions add
//! UnixGroupIDs, the groups the process holds. The verdict goes by the uid and the user
//! database either way, as dbus-daemon's own `group=` rules do, so that whoever the bus
//! policy lets call methods is exactly whoever reads these properties.
//!
//! One lookup per connection: the verdict is kept per unique name (a bus never gives one
//! twice) until NameOwnerChanged says the name is gone, in a cache of at most [`MAX_KEPT`]
//! names, emptied when full, for a name that left while its lookup ran. A hit is a hash
//! lookup. The cache is the process's: the daemon serves one bus.
//!
//! Fails closed: no message (zbus's own InterfacesAdded, which every local user hears), a
//! message without a sender (a peer-to-peer connection: the daemon serves only the bus), and
//! a lookup that fails all make an outsider. A failed lookup is logged once, and its verdict
//! kept like any other: that connection reads what outsiders read until it reconnects.

use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};

use zbus::export::futures_core::Stream;
use zbus::fdo::{self, ConnectionCredentials};
use zbus::message::Header;
use zbus::names::{BusName, UniqueName};
use zbus::{Connection, MatchRule, MessageStream};

use crate::access::{self, DRIVERS};
use crate::lock::lock;

/// Past what dbus-daemon's system bus lets connect at once (2048 connections by default).
const MAX_KEPT: usize = 4096;

/// The bus daemon itself, as a peer: its name, object and interface.
const BUS: &str = "org.freedesktop.DBus";
const BUS_PATH: &str = "/org/freedesktop/DBus";

/// Why a caller's verdict could not be learnt.
#[derive(Debug, thiserror::Error)]
enum Unknown {
    #[error("the bus does not give its credentials: {0}")]
    Credentials(#[source] fdo::Error),
    #[error("cannot read the credentials the bus gives: {0}")]
    Unreadable(#[source] zbus::Error),
    #[error("the bus gives no uid among its credentials")]
    NoUid,
    #[error(transparent)]
    Groups(#[from] access::Error),
    #[error("the lookup of its groups did not finish: {0}")]
    Stopped(#[source] tokio::task::JoinError),
}

/// The verdicts learnt, by unique name: whether that connection is a driver's.
#[derive(Debug, Default)]
struct Verdicts {
    by_name: HashMap<String, bool>,
}

impl Verdicts {
    fn get(&self, name: &str) -> Option<bool> {
        self.by_name.get(name).copied()
    }

    fn keep(&mut self, name: &str, driver: bool) {
        if self.by_name.len() >= MAX_KEPT && !self.by_name.contains_key(name) {
            self.by_name.clear();
        }
        self.by_name.insert(name.to_owned(), driver);
    }

    fn forget(&mut self, name: &str) {
        self.by_name.remove(name);
    }
}

fn verdicts() -> &'static Mutex<Verdicts> {
    static VERDICTS: OnceLock<Mutex<Verdicts>> = OnceLock::new();
    VERDICTS.get_or_init(Default::default)
}

/// Whether the sender of the message `header` belongs to (None: no message) may read what
/// only drivers read.
pub async fn is_driver(conn: &Connection, header: Option<&Header<'_>>) -> bool {
    let Some(sender) = header.and_then(Header::sender) else {
        return false;
    };
    if let Some(driver) = lock(verdicts()).get(sender.as_str()) {
        return driver;
    }
    let driver = match look_up(conn, sender).await {
        Ok(driver) => driver,
        // Gone already: nobody is left to read the answer, and the name never comes back.
        Err(Unknown::Credentials(fdo::Error::NameHasNoOwner(_))) => return false,
        Err(e) => {
            tracing::warn!(
                "taking the caller {sender} for one neither root nor in {DRIVERS}, for as \
                 long as it stays connected: {e}"
            );
            false
        }
    };
    lock(verdicts()).keep(sender.as_str(), driver);
    driver
}

async fn look_up(conn: &Connection, sender: &UniqueName<'_>) -> Result<bool, Unknown> {
    // Without zbus's proxies (a feature this crate leaves out): the call DBusProxy makes.
    let reply = conn
        .call_method(
            Some(BUS),
            BUS_PATH,
            Some(BUS),
            "GetConnectionCredentials",
            &(BusName::Unique(sender.as_ref()),),
        )
        .await
        .map_err(|e| Unknown::Credentials(e.into()))?;
    let credentials: ConnectionCredentials =
        reply.body().deserialize().map_err(Unknown::Unreadable)?;
    let uid = credentials.unix_user_id().ok_or(Unknown::NoUid)?;
    // The user and group databases may be slow (NSS over the network).
    let driver = tokio::task::spawn_blocking(move || access::may_drive(uid))
        .await
        .map_err(Unknown::Stopped)??;
    Ok(driver)
}

/// Forgets the verdict of each connection that leaves the bus, from now on. Without the
/// subscription (logged), the bound on the cache still holds.
pub async fn watch(conn: &Connection) {
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(BUS)
        .path(BUS_PATH)
        .interface(BUS)
        .member("NameOwnerChanged")
        // The new owner: none when the name is gone.
        .arg(2, "")
        .build();
    let subscribed = match rule {
        Ok(rule) => MessageStream::for_match_rule(rule, conn, None).await,
        Err(e) => Err(e),
    };
    let mut gone = match subscribed {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(
                "cannot follow who leaves the bus, so callers are forgotten only in bulk: {e}"
            );
            return;
        }
    };
    tokio::spawn(async move {
        while let Some(msg) = poll_fn(|cx| Pin::new(&mut gone).poll_next(cx)).await {
            let Ok(msg) = msg else { continue };
            let body = msg.body();
            let Ok((name, _, _)) = body.deserialize::<(BusName<'_>, &str, &str)>() else {
                continue;
            };
            if let BusName::Unique(name) = name {
                lock(verdicts()).forget(name.as_str());
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_is_kept_until_forgotten() {
        let mut v = Verdicts::default();
        assert_eq!(v.get(":1.7"), None);
        v.keep(":1.7", true);
        v.keep(":1.8", false);
        assert_eq!((v.get(":1.7"), v.get(":1.8")), (Some(true), Some(false)));
        v.forget(":1.7");
        assert_eq!((v.get(":1.7"), v.get(":1.8")), (None, Some(false)));
    }

    #[test]
    fn a_full_cache_starts_over_and_keeps_the_newcomer() {
        let mut v = Verdicts::default();
        for i in 0..MAX_KEPT {
            v.keep(&format!(":1.{i}"), true);
        }
        assert_eq!(v.by_name.len(), MAX_KEPT);
        v.keep(":1.0", false);
        assert_eq!(
            v.by_name.len(),
            MAX_KEPT,
            "a name already kept takes no room"
        );
        v.keep(":2.0", false);
        assert_eq!(v.by_name.len(), 1);
        assert_eq!(v.get(":2.0"), Some(false));
        assert_eq!(v.get(":1.1"), None);
    }
}
