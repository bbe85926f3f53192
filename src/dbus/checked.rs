//! What each of our interfaces answers before zbus's generated code does. (The standard
//! interfaces every node has are zbus's own: Properties, Introspectable and Peer answer a
//! wrong signature with zbus's InvalidArgs message.)
//!
//! zbus 6 answers a body that does not fit a method's arguments with
//! `org.freedesktop.DBus.Error.InvalidArgs`, but only for methods that take arguments
//! (a method without any accepts any body), and its message ("Signature mismatch: got `s`,
//! expected `(sa{sv})`") names neither the method nor the types as the contract spells
//! them. So each interface is served wrapped in [`Checked`], which compares the body's
//! signature with the method's in-arguments first and answers `InvalidArgs`, naming the
//! method and both signatures, when they differ.
//!
//! zbus's Properties answers a Set of a property that has no setter with
//! `UnknownProperty`, as if it did not exist; [`Checked`] answers `PropertyReadOnly`.
//!
//! [`Checked`] also serves the properties an interface keeps in a [`Table`] (the VM's
//! settings): their Get, GetAll, Set and introspection data, and answers a Get or GetAll of
//! the properties only drivers read ([`Table::DRIVERS_ONLY`]) with empty strings unless
//! [`caller`] finds the sender a driver. GetManagedObjects and zbus's InterfacesAdded read
//! through GetAll here too (InterfacesAdded with no message, so empty for everyone).
//! A method the interface answers itself from bytes kept serialized ([`Table::reply_raw`],
//! ListVMs) goes there once its arguments fit. Everything else goes to the wrapped interface
//! unchanged.
//!
//! The signatures and the read-only properties come from the wrapped interface's own
//! introspection data, so they cannot drift from what the macro serves.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use zbus::message::{Header, Message};
use zbus::names::{InterfaceName, MemberName};
use zbus::object_server::{DispatchResult, Interface, SignalEmitter};
use zbus::{fdo, BoxDBusError, Connection, ObjectServer};
use zbus::{OwnedVariant, Signature, Variant};

use super::caller;
use super::table::{self, Table};
use crate::lock::lock;

/// What one method takes: the signature as the contract spells it, for messages, and parsed,
/// to compare with a body's.
#[derive(Debug)]
struct InArgs {
    text: String,
    signature: Signature,
}

/// What the wrapper checks, read from an interface's introspection data.
#[derive(Debug, Default)]
struct Members {
    /// Method name → its in-arguments.
    methods: HashMap<String, InArgs>,
    read_only: HashSet<String>,
}

/// `inner`, whose method calls are refused with `InvalidArgs` when their arguments do not
/// have the method's types, and whose read-only properties are named so when Set.
pub struct Checked<I> {
    inner: I,
    /// The same for every object of the interface: read once, shared.
    members: Arc<Members>,
}

impl<I: Interface + Table> Checked<I> {
    pub fn new(inner: I) -> Self {
        static READ: OnceLock<Mutex<HashMap<String, Arc<Members>>>> = OnceLock::new();
        let mut read = lock(READ.get_or_init(Default::default));
        let members = read
            .entry(I::name().to_string())
            .or_insert_with(|| Arc::new(members_of(&inner)))
            .clone();
        drop(read);
        Checked { inner, members }
    }

    pub fn inner(&self) -> &I {
        &self.inner
    }

    /// The refusal of `msg` when its body does not fit `member`'s in-arguments.
    fn refusal(&self, msg: &Message, member: &MemberName<'_>) -> Option<String> {
        let want = self.members.methods.get(member.as_str())?;
        mismatch(member.as_str(), want, msg.body().signature())
    }

    fn refuse<'call>(
        conn: &'call Connection,
        msg: &'call Message,
        text: String,
    ) -> DispatchResult<'call> {
        DispatchResult::new_async(conn, msg, async move {
            Err::<(), _>(fdo::Error::InvalidArgs(text))
        })
    }
}

/// What `inner`'s introspection data says it takes.
fn members_of<I: Interface>(inner: &I) -> Members {
    let mut xml = String::from("<node>");
    inner.introspect_to_writer(&mut xml, 0);
    xml.push_str("</node>");
    members(&xml).unwrap_or_else(|e| {
        // Not reachable with our interfaces (a unit test reads each contract file and the
        // integration tests call every method); if it were, zbus's own check remains.
        tracing::error!(
            "cannot read the members of {} from its introspection data: {e}",
            I::name()
        );
        Members::default()
    })
}

/// The in-arguments of every method, and the read-only properties, of the interfaces in
/// `xml`, a `<node>` as introspection writes it.
fn members(xml: &str) -> Result<Members, String> {
    let node = zbus_xml::Node::from_reader(xml.as_bytes()).map_err(|e| e.to_string())?;
    let mut members = Members::default();
    for iface in node.interfaces() {
        for method in iface.methods() {
            // A method's arguments are "in" unless the XML says otherwise.
            let text: String = method
                .args()
                .iter()
                .filter(|a| a.direction() != Some(zbus_xml::ArgDirection::Out))
                .map(|a| a.ty().to_string())
                .collect();
            let signature = Signature::try_from(text.as_str())
                .map_err(|e| format!("method {}: signature '{text}': {e}", method.name()))?;
            members
                .methods
                .insert(method.name().to_string(), InArgs { text, signature });
        }
        for property in iface.properties() {
            if !property.access().write() {
                members.read_only.insert(property.name().to_string());
            }
        }
    }
    Ok(members)
}

/// Why a body of signature `got` does not fit `method`, or None when it does.
///
/// zvariant reads a body of one struct, `(su)`, as the same signature as the arguments `su`;
/// both have the same bytes (a body starts 8-aligned), and the macro accepts either, so
/// both pass here too.
fn mismatch(method: &str, want: &InArgs, got: &Signature) -> Option<String> {
    if *got == want.signature {
        return None;
    }
    let got = got.to_string_no_parens();
    Some(match (want.text.is_empty(), got.is_empty()) {
        (true, _) => format!("{method} takes no arguments, not '{got}'"),
        (false, true) => format!(
            "{method} takes arguments of type '{}', and was given none",
            want.text
        ),
        (false, false) => format!(
            "{method} takes arguments of type '{}', not '{got}'",
            want.text
        ),
    })
}

/// What a caller who is not a driver reads of a property of [`Table::DRIVERS_ONLY`].
fn hidden() -> OwnedVariant {
    OwnedVariant::from(zbus::Str::from_static(""))
}

/// `all`, properties of `I`, as a caller who is not a driver reads them: those of
/// [`Table::DRIVERS_ONLY`] empty. Whether that changed any of them.
pub(super) fn hide<I: Table>(all: &mut HashMap<String, OwnedVariant>) -> bool {
    let mut changed = false;
    for name in I::DRIVERS_ONLY {
        if let Some(value) = all.get_mut(*name) {
            let empty = hidden();
            if *value != empty {
                *value = empty;
                changed = true;
            }
        }
    }
    changed
}

#[async_trait]
impl<I: Interface + Table> Interface for Checked<I> {
    fn name() -> InterfaceName<'static> {
        I::name()
    }

    fn spawn_tasks_for_methods(&self) -> bool {
        self.inner.spawn_tasks_for_methods()
    }

    async fn get(
        &self,
        property_name: &str,
        server: &ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> Option<Result<OwnedVariant, BoxDBusError>> {
        if I::DRIVERS_ONLY.contains(&property_name) && !caller::is_driver(connection, header).await
        {
            return Some(Ok(hidden()));
        }
        if table::row::<I>(property_name).is_some() {
            return self.inner.get_row(property_name).map(Ok);
        }
        self.inner
            .get(property_name, server, connection, header, emitter)
            .await
    }

    async fn get_all(
        &self,
        object_server: &ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> fdo::Result<HashMap<String, OwnedVariant>> {
        let mut all =
            table::get_all(&self.inner, object_server, connection, header, emitter).await?;
        if !I::DRIVERS_ONLY.is_empty() && !caller::is_driver(connection, header).await {
            hide::<I>(&mut all);
        }
        Ok(all)
    }

    fn set<'call>(
        &'call self,
        property_name: &'call str,
        value: &'call Variant<'_>,
        object_server: &'call ObjectServer,
        connection: &'call Connection,
        header: Option<&'call Header<'_>>,
        emitter: &'call SignalEmitter<'_>,
    ) -> DispatchResult<'call> {
        if self.members.read_only.contains(property_name) {
            let text = format!("Property '{property_name}' is read-only");
            return DispatchResult::Async(Box::pin(async move {
                Err(fdo::Error::PropertyReadOnly(text).into())
            }));
        }
        if table::row::<I>(property_name).is_some() {
            if let Some(set) = self.inner.set_row(property_name, value) {
                return DispatchResult::Async(set);
            }
        }
        self.inner.set(
            property_name,
            value,
            object_server,
            connection,
            header,
            emitter,
        )
    }

    async fn set_mut(
        &mut self,
        property_name: &str,
        value: &Variant<'_>,
        object_server: &ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> Option<Result<(), BoxDBusError>> {
        self.inner
            .set_mut(
                property_name,
                value,
                object_server,
                connection,
                header,
                emitter,
            )
            .await
    }

    fn call<'call>(
        &'call self,
        server: &'call ObjectServer,
        connection: &'call Connection,
        msg: &'call Message,
        name: MemberName<'call>,
    ) -> DispatchResult<'call> {
        if let Some(text) = self.refusal(msg, &name) {
            return Self::refuse(connection, msg, text);
        }
        if let Some(reply) = self.inner.reply_raw(name.as_str(), connection, msg) {
            return DispatchResult::Async(Box::pin(async move {
                reply
                    .await
                    .map_err(|e| Box::new(fdo::Error::Failed(e.to_string())) as BoxDBusError)
            }));
        }
        self.inner.call(server, connection, msg, name)
    }

    fn call_mut<'call>(
        &'call mut self,
        server: &'call ObjectServer,
        connection: &'call Connection,
        msg: &'call Message,
        name: MemberName<'call>,
    ) -> DispatchResult<'call> {
        if let Some(text) = self.refusal(msg, &name) {
            return Self::refuse(connection, msg, text);
        }
        self.inner.call_mut(server, connection, msg, name)
    }

    fn introspect_to_writer(&self, writer: &mut dyn Write, level: usize) {
        let mut xml = String::new();
        self.inner.introspect_to_writer(&mut xml, level);
        // The rows go last in the interface element, as the macro writes properties.
        let end = xml
            .rfind("</interface>")
            .map_or(xml.len(), |i| xml[..i].rfind('\n').map_or(0, |nl| nl + 1));
        let (head, tail) = xml.split_at(end);
        let _ = writer.write_str(head);
        table::introspect::<I>(writer, level + 2);
        let _ = writer.write_str(tail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(file: &str) -> Members {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("dbus")
            .join(file);
        members(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn table(file: &str) -> HashMap<String, InArgs> {
        read(file).methods
    }

    fn sig(s: &str) -> Signature {
        Signature::try_from(s).unwrap()
    }

    #[test]
    fn the_contract_files_give_every_method_its_in_arguments() {
        let manager = table("org.gns3.Qemu.Manager.xml");
        assert_eq!(manager["CreateVM"].text, "sa{sv}");
        assert_eq!(manager["GetVM"].text, "s");
        assert_eq!(manager["ListVMs"].text, "", "out-arguments are not taken");
        assert_eq!(manager["ReleaseUdpPort"].text, "q");
        let vm = table("org.gns3.Qemu.VM.xml");
        assert_eq!(vm["AddUdpTunnel"].text, "uqsq");
        assert_eq!(vm["Configure"].text, "a{sv}");
        assert_eq!(vm["Start"].text, "");
        assert_eq!(vm["OpenConsole"].text, "a{sv}");
        assert_eq!(vm["ReadConsole"].text, "u");
        assert_eq!(vm["HumanMonitorCommand"].text, "s");
        assert_eq!(vm["OpenGraphics"].text, "a{sv}");
        assert_eq!(vm["RepairDisks"].text, "");
        assert_eq!(vm["StartCapture"].text, "ua{sv}");
        assert_eq!(vm["StopCapture"].text, "u");
        assert_eq!(vm["OpenCapture"].text, "u");
        assert_eq!(vm["SetLinkSuspended"].text, "ub");
        assert_eq!(vm["PowerOff"].text, "");
        assert_eq!(vm["DiscardSavedState"].text, "");
        assert_eq!(vm.len(), 24);
    }

    fn table_of(xml: &str) -> Result<HashMap<String, InArgs>, String> {
        members(xml).map(|m| m.methods)
    }

    #[test]
    fn read_only_properties_are_known() {
        let m = read("org.gns3.Qemu.Manager.xml");
        let mut ro: Vec<&str> = m.read_only.iter().map(String::as_str).collect();
        ro.sort();
        assert_eq!(ro, ["ConsoleHost", "UdpHost", "Version"]);
        let vm = read("org.gns3.Qemu.VM.xml");
        assert!(vm.read_only.contains("State") && !vm.read_only.contains("Ram"));
        assert_eq!(vm.read_only.len(), crate::dbus::READ_ONLY.len());
    }

    #[test]
    fn args_without_a_direction_are_in() {
        let t = table_of(
            r#"<node><interface name="a.B"><method name="M"><arg type="s"/><arg type="u"/>
               <arg type="b" direction="out"/></method></interface></node>"#,
        )
        .unwrap();
        assert_eq!(t["M"].text, "su");
    }

    #[test]
    fn a_matching_body_passes() {
        let vm = table("org.gns3.Qemu.VM.xml");
        assert_eq!(mismatch("Start", &vm["Start"], &Signature::Unit), None);
        assert_eq!(
            mismatch("AddUdpTunnel", &vm["AddUdpTunnel"], &sig("uqsq")),
            None
        );
        let m = table("org.gns3.Qemu.Manager.xml");
        assert_eq!(mismatch("CreateVM", &m["CreateVM"], &sig("sa{sv}")), None);
    }

    #[test]
    fn a_wrong_body_is_named_with_both_signatures() {
        let m = table("org.gns3.Qemu.Manager.xml");
        assert_eq!(
            mismatch("CreateVM", &m["CreateVM"], &sig("s")).unwrap(),
            "CreateVM takes arguments of type 'sa{sv}', not 's'"
        );
        assert_eq!(
            mismatch("CreateVM", &m["CreateVM"], &sig("sa{ss}")).unwrap(),
            "CreateVM takes arguments of type 'sa{sv}', not 'sa{ss}'"
        );
        assert_eq!(
            mismatch("GetVM", &m["GetVM"], &Signature::Unit).unwrap(),
            "GetVM takes arguments of type 's', and was given none"
        );
        assert_eq!(
            mismatch("ListVMs", &m["ListVMs"], &sig("s")).unwrap(),
            "ListVMs takes no arguments, not 's'"
        );
        let vm = table("org.gns3.Qemu.VM.xml");
        assert_eq!(
            mismatch("AddUdpTunnel", &vm["AddUdpTunnel"], &sig("uqsqs")).unwrap(),
            "AddUdpTunnel takes arguments of type 'uqsq', not 'uqsqs'"
        );
        assert!(mismatch("AddUdpTunnel", &vm["AddUdpTunnel"], &sig("uusq")).is_some());
    }

    #[test]
    fn a_bad_document_is_an_error() {
        assert!(members("<node><interface").is_err());
    }
}
