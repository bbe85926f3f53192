//! Properties an interface keeps in a table rather than in the macro's getters and setters:
//! the VM's settings, one row each (`model/settings.rs`). [`Checked`](super::checked::Checked)
//! serves them.
//!
//! A generated property setter emits PropertiesChanged itself once it returns, beside the one
//! that the task mirroring the VM's view (`mirror::mirror`) emits for every change, all changed
//! properties in one. A row has no generated setter: its Set goes to the core, and the
//! mirror's signal is the only one.

use std::collections::HashMap;
use std::fmt::Write;
use std::future::Future;
use std::pin::Pin;

use zbus::message::{Header, Message};
use zbus::object_server::{introspect_doc_comment, Interface, SignalEmitter};
use zbus::{fdo, BoxDBusError, Connection, ObjectServer, OwnedVariant, Variant};

use crate::model::table::{Row, When};

/// A Set answered by the core: its reply.
pub type SetFuture<'a> = Pin<Box<dyn Future<Output = Result<(), BoxDBusError>> + Send + 'a>>;

/// A method call answered by [`Table::reply_raw`]: sending its reply.
pub type ReplyFuture<'a> = Pin<Box<dyn Future<Output = zbus::Result<()>> + Send + 'a>>;

/// Properties an interface serves from a table (the VM's settings, `model/settings.rs`)
/// rather than through the macro: their introspection data, Get, GetAll and Set all come from
/// the rows.
pub trait Table {
    const ROWS: &'static [Row] = &[];

    /// The properties, of type `s`, that only root and members of gns3 read (as
    /// [`caller`](super::caller) finds the sender): everyone else reads them as empty
    /// strings. A change of one is signalled as invalidated, without its value, since
    /// signals reach every local user; drivers read it again with Get.
    const DRIVERS_ONLY: &'static [&'static str] = &[];

    /// The value of row `name`.
    fn get_row(&self, name: &str) -> Option<OwnedVariant> {
        let _ = name;
        None
    }

    /// The Set of row `name` to `value`.
    fn set_row<'a>(&'a self, name: &str, value: &Variant<'_>) -> Option<SetFuture<'a>> {
        let _ = (name, value);
        None
    }

    /// The answer to `call` of method `name`, when the interface replies itself with a body
    /// kept serialized (ListVMs, [`raw`](super::raw)) rather than through the macro's code.
    fn reply_raw<'a>(
        &'a self,
        name: &str,
        conn: &'a Connection,
        call: &'a Message,
    ) -> Option<ReplyFuture<'a>> {
        let _ = (name, conn, call);
        None
    }
}

/// Every property of `inner`, the macro's and the table's: GetAll's answer.
pub async fn get_all<I: Interface + Table>(
    inner: &I,
    server: &ObjectServer,
    connection: &Connection,
    header: Option<&Header<'_>>,
    emitter: &SignalEmitter<'_>,
) -> fdo::Result<HashMap<String, OwnedVariant>> {
    let mut all = inner.get_all(server, connection, header, emitter).await?;
    for row in I::ROWS {
        if let Some(value) = inner.get_row(row.key) {
            all.insert(row.key.to_string(), value);
        }
    }
    Ok(all)
}

/// The row named `name`, if `I` keeps such a property in its table.
pub fn row<I: Table>(name: &str) -> Option<&'static Row> {
    I::ROWS.iter().find(|row| row.key == name)
}

/// The rows as introspection data: a `<property>` each, after its documentation, with the
/// annotation that says what a change does to a running VM (clients such as gns3-qemuctl tell
/// their user from it).
pub fn introspect<I: Table>(writer: &mut dyn Write, indent: usize) {
    for row in I::ROWS {
        introspect_doc_comment(writer, indent, row.doc.trim_end());
        let _ = writeln!(
            writer,
            r#"{:indent$}<property name="{}" type="{}" access="readwrite">"#,
            "", row.key, row.signature
        );
        let annotation = |writer: &mut dyn Write, name: &str, value: &str| {
            let _ = writeln!(
                writer,
                r#"{:inner$}<annotation name="{name}" value="{value}"/>"#,
                "",
                inner = indent + 2,
            );
        };
        if I::DRIVERS_ONLY.contains(&row.key) {
            // As the macro writes it for a property of its own (LastError).
            annotation(writer, EMITS_CHANGED, "invalidates");
        }
        annotation(writer, APPLIES, applies(row.when));
        let _ = writeln!(writer, "{:indent$}</property>", "");
    }
}

/// The annotation's value for `when`, as the contract spells it.
fn applies(when: When) -> &'static str {
    match when {
        When::NextStart => "next-start",
        When::Stopped => "stopped",
        When::Live => "live",
    }
}

const EMITS_CHANGED: &str = "org.freedesktop.DBus.Property.EmitsChangedSignal";
/// What a change of the setting does to a running VM: `next-start` (stored, QEMU gets it at
/// its next start), `stopped` (refused while QEMU runs) or `live` (applied at once).
const APPLIES: &str = "org.gns3.Qemu.Applies";
