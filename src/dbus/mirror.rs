//! The PropertiesChanged signals of a VM object: one per change of the actor's view, with
//! every property that differs.

use std::collections::HashMap;
use zbus::object_server::SignalEmitter;
use zbus::wire::serialized::{Context, Data};
use zbus::wire::{to_bytes, NATIVE_ENDIAN};
use zbus::{fdo, OwnedVariant, Variant};

use super::table::Table;
use super::vm::{Vm, INTERFACE};

/// Emits one PropertiesChanged per change of the VM's view, with every property that
/// differs: its value, or for those only drivers read, its name among the invalidated (the
/// signal reaches every local user); ends when the VM is gone.
pub async fn mirror(vm: Vm, conn: zbus::Connection, emitter: SignalEmitter<'static>) {
    use super::table::get_all;
    let mut rx = vm.handle.watch();
    let server = conn.object_server();
    // Read from the VM itself, not through Checked: every value, whoever is listening.
    let mut last = match get_all(&vm, server, &conn, None, &emitter).await {
        Ok(props) => keep(&props),
        Err(e) => {
            tracing::error!("cannot read the VM's properties: {e}");
            return;
        }
    };
    while rx.changed().await.is_ok() {
        let Ok(now) = get_all(&vm, server, &conn, None, &emitter).await else {
            continue;
        };
        let (changed, invalidated) = changes(&kept(&last), &now);
        if !changed.is_empty() || !invalidated.is_empty() {
            let iface = zbus::names::InterfaceName::from_static_str_unchecked(INTERFACE);
            if let Err(e) =
                fdo::Properties::properties_changed(&emitter, iface, changed, invalidated.into())
                    .await
            {
                tracing::warn!("cannot emit PropertiesChanged: {e}");
            }
        }
        last = keep(&now);
    }
}

/// The values last told, kept serialized between changes: about 1 KiB a VM, where the map
/// of boxed values took about 8 KiB more, for every VM defined (the `scale` bench). None if
/// they could not be (then the next change tells every property).
fn keep(props: &HashMap<String, OwnedVariant>) -> Option<Data<'static, 'static>> {
    to_bytes(Context::new(NATIVE_ENDIAN, 0), props).ok()
}

fn kept(last: &Option<Data<'static, 'static>>) -> HashMap<String, OwnedVariant> {
    last.as_ref()
        .and_then(|data| data.deserialize().ok())
        .map(|(props, _)| props)
        .unwrap_or_default()
}

/// What PropertiesChanged says from `last` to `now`: the new values of the properties that
/// differ, and the names of those among them only drivers read, in [`Table::DRIVERS_ONLY`]
/// order, without their values.
fn changes<'a>(
    last: &HashMap<String, OwnedVariant>,
    now: &'a HashMap<String, OwnedVariant>,
) -> (HashMap<&'a str, Variant<'a>>, Vec<&'static str>) {
    let differs = |k: &str| now.get(k).is_some_and(|v| last.get(k) != Some(v));
    let changed = now
        .iter()
        .filter(|(k, _)| !Vm::DRIVERS_ONLY.contains(&k.as_str()) && differs(k))
        .filter_map(|(k, v)| Some((k.as_str(), Variant::try_from(v).ok()?)))
        .collect();
    let invalidated = Vm::DRIVERS_ONLY
        .iter()
        .copied()
        .filter(|k| differs(k))
        .collect();
    (changed, invalidated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> HashMap<String, OwnedVariant> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OwnedVariant::from(zbus::Str::from(*v))))
            .collect()
    }

    #[test]
    fn what_is_kept_reads_back_as_it_was() {
        let mut last = props(&[("Name", "a"), ("Options", "-m 64")]);
        last.insert("Ram".into(), OwnedVariant::from(96u32));
        assert_eq!(kept(&keep(&last)), last);
        assert!(kept(&None).is_empty());
    }

    #[test]
    fn a_change_of_what_only_drivers_read_is_named_not_told() {
        let last = props(&[("Name", "a"), ("Options", "-m 64"), ("LastError", "")]);
        let now = props(&[("Name", "b"), ("Options", "-m 96"), ("LastError", "x")]);
        let (changed, invalidated) = changes(&last, &now);
        let keys: Vec<&str> = changed.keys().copied().collect();
        assert_eq!(keys, ["Name"]);
        assert_eq!(changed["Name"], Variant::from("b"));
        assert_eq!(invalidated, ["Options", "LastError"]);
        let (changed, invalidated) = changes(&now, &now);
        assert!(changed.is_empty() && invalidated.is_empty());
    }

    /// The contract says of exactly these properties that a change only invalidates them,
    /// and each is a string, so that an empty one stands for it.
    #[test]
    fn the_contract_marks_exactly_the_drivers_only_properties() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/org.gns3.Qemu.VM.xml");
        let xml = std::fs::read_to_string(path).unwrap();
        let node = zbus_xml::Node::from_reader(xml.as_bytes()).unwrap();
        let mut marked = Vec::new();
        for property in node.interfaces()[0].properties() {
            let invalidates = property.annotations().iter().any(|a| {
                a.name() == "org.freedesktop.DBus.Property.EmitsChangedSignal"
                    && a.value() == "invalidates"
            });
            if invalidates {
                assert_eq!(property.ty().to_string(), "s", "{}", property.name());
                marked.push(property.name().to_string());
            }
        }
        let mut want: Vec<&str> = Vm::DRIVERS_ONLY.to_vec();
        want.sort();
        marked.sort();
        assert_eq!(marked, want);
    }
}
