//! The VM interface's settings as the contract (dbus/org.gns3.Qemu.VM.xml) declares them,
//! and `Prop=Value` from the command line turned into the variant of the property's type:
//! the types are read from the contract, never restated here.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use zbus::{OwnedVariant, Variant};

use crate::error::{Error, Result};

const VM_XML: &str = include_str!("../../dbus/org.gns3.Qemu.VM.xml");
/// The daemon's bus name.
pub const SERVICE: &str = "org.gns3.Qemu";
/// The VM's interface, as the contract names it.
pub const VM_INTERFACE: &str = "org.gns3.Qemu.VM";
/// The settings that name files: the daemon resolves nothing against a client's directory,
/// so clients send them as absolute paths.
pub const FILES: [&str; 8] = [
    "HdaDiskImage",
    "HdbDiskImage",
    "HdcDiskImage",
    "HddDiskImage",
    "CdromImage",
    "KernelImage",
    "Initrd",
    "BiosImage",
];
/// The Adapters of a VM whose creator gives none (the contract's default).
pub const DEFAULT_ADAPTERS: u32 = 1;
/// What CreateVM takes beside the writable properties (dbus/org.gns3.Qemu.Manager.xml).
const CREATE_ONLY: [&str; 2] = ["Id", "Project"];

/// A property of the VM interface: its D-Bus type, whether it may be written, and what a
/// change does while the VM runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    pub signature: String,
    pub writable: bool,
    pub applies: Applies,
}

/// The contract's annotation org.gns3.Qemu.Applies of a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    /// Stored; QEMU gets it at its next start.
    NextStart,
    /// Refused while the VM runs.
    Stopped,
    /// Applied at once (and every read-only property, which no one changes).
    Live,
}

const APPLIES: &str = "org.gns3.Qemu.Applies";

/// The VM interface's properties, by name.
pub fn properties() -> &'static BTreeMap<String, Property> {
    static PROPERTIES: OnceLock<BTreeMap<String, Property>> = OnceLock::new();
    PROPERTIES.get_or_init(|| parse(VM_XML))
}

/// The properties of the VM interface in `xml`. The contract is compiled in and a test
/// parses it, so a contract that does not parse cannot ship: an empty table is never used.
fn parse(xml: &str) -> BTreeMap<String, Property> {
    let Ok(node) = zbus_xml::Node::from_reader(xml.as_bytes()) else {
        return BTreeMap::new();
    };
    let Some(iface) = node.interfaces().iter().find(|i| i.name() == VM_INTERFACE) else {
        return BTreeMap::new();
    };
    iface
        .properties()
        .map(|p| {
            let applies = p.annotations().iter().find(|a| a.name() == APPLIES);
            let property = Property {
                signature: p.ty().to_string(),
                writable: p.access().write(),
                applies: match applies.map(|a| a.value()) {
                    Some("next-start") => Applies::NextStart,
                    Some("stopped") => Applies::Stopped,
                    _ => Applies::Live,
                },
            };
            (p.name().to_string(), property)
        })
        .collect()
}

/// Which settings a `Prop=Value` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Configure: the writable properties.
    Configure,
    /// CreateVM: those, and Id and Project.
    Create,
}

/// `Prop=Value` as the property's name and its value in the property's type.
pub fn setting(given: &str, usage: Use) -> Result<(String, OwnedVariant)> {
    let bad = |why: String| Error::Setting {
        given: given.to_string(),
        why,
    };
    let (name, text) = given
        .split_once('=')
        .ok_or_else(|| bad("write it as Prop=Value".into()))?;
    let property = properties().get(name).ok_or_else(|| {
        bad(format!(
            "no such setting; the settings are {}",
            settable(usage).join(", ")
        ))
    })?;
    let allowed = property.writable || (usage == Use::Create && CREATE_ONLY.contains(&name));
    if !allowed {
        return Err(bad(format!("{name} is read-only")));
    }
    let value = value(&property.signature, text).map_err(bad)?;
    Ok((name.to_string(), value))
}

/// The names a `Prop=Value` may use, sorted.
fn settable(usage: Use) -> Vec<&'static str> {
    properties()
        .iter()
        .filter(|(n, p)| p.writable || (usage == Use::Create && CREATE_ONLY.contains(&n.as_str())))
        .map(|(n, _)| n.as_str())
        .collect()
}

/// `text` as a value of the D-Bus type `signature`; the error says what was expected.
pub fn value(signature: &str, text: &str) -> std::result::Result<OwnedVariant, String> {
    fn number<T: std::str::FromStr + Into<OwnedVariant>>(
        text: &str,
        what: &str,
    ) -> std::result::Result<OwnedVariant, String> {
        text.parse::<T>()
            .map(Into::into)
            .map_err(|_| format!("expected {what}, not '{text}'"))
    }
    match signature {
        "s" => Ok(OwnedVariant::from(zbus::Str::from(text.to_string()))),
        "b" => match text {
            "true" | "yes" | "on" | "1" => Ok(true.into()),
            "false" | "no" | "off" | "0" => Ok(false.into()),
            _ => Err(format!("expected yes or no, not '{text}'")),
        },
        "y" => number::<u8>(text, "a number from 0 to 255"),
        "q" => number::<u16>(text, "a number from 0 to 65535"),
        "u" => number::<u32>(text, "a number from 0 to 4294967295"),
        "t" => number::<u64>(text, "a number of 0 or more"),
        "n" => number::<i16>(text, "a number from -32768 to 32767"),
        "i" => number::<i32>(text, "a number from -2147483648 to 2147483647"),
        "x" => number::<i64>(text, "a number"),
        "d" => number::<f64>(text, "a number"),
        "a(uss)" => adapters(text)
            .and_then(|v| OwnedVariant::try_from(Variant::from(v)).map_err(|e| e.to_string())),
        other => Err(format!(
            "a value of D-Bus type {other} cannot be given on the command line"
        )),
    }
}

/// CustomAdapters on the command line: `ADAPTER:MODEL:MAC` entries, comma-separated, MODEL
/// or MAC empty for the VM's own (`1:virtio-net-pci:,3::52:54:00:ab:cd:ef`); empty for none.
fn adapters(text: &str) -> std::result::Result<Vec<(u32, String, String)>, String> {
    text.split(',')
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let mut parts = entry.splitn(3, ':');
            let adapter = parts.next().and_then(|a| a.parse::<u32>().ok());
            match (adapter, parts.next(), parts.next()) {
                (Some(a), Some(model), Some(mac)) => Ok((a, model.to_string(), mac.to_string())),
                _ => Err(format!(
                    "expected ADAPTER:MODEL:MAC entries separated by commas (MODEL or MAC empty \
                     for the VM's own, as 1:virtio-net-pci:), not '{entry}'"
                )),
            }
        })
        .collect()
}

/// A `u` value, if `value` is one.
pub fn as_u32(value: Option<&OwnedVariant>) -> Option<u32> {
    match value.map(|v| &**v) {
        Some(Variant::U32(n)) => Some(*n),
        _ => None,
    }
}

/// A string setting's value.
pub fn string(s: &str) -> OwnedVariant {
    OwnedVariant::from(zbus::Str::from(s.to_string()))
}

/// Settings as CreateVM and Configure take them (`a{sv}`).
pub fn call_args<'a>(
    settings: impl IntoIterator<Item = (&'a String, &'a OwnedVariant)>,
) -> HashMap<&'a str, Variant<'a>> {
    settings
        .into_iter()
        .map(|(k, v)| (k.as_str(), Variant::from(v.clone())))
        .collect()
}

/// A size in bytes (`1073741824`, `512M`, `20G`): a disk's, as ResizeDisk takes it.
pub fn bytes(text: &str) -> std::result::Result<u64, String> {
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) => match c.to_ascii_uppercase() {
            'K' => (&text[..i], 1u64 << 10),
            'M' => (&text[..i], 1 << 20),
            'G' => (&text[..i], 1 << 30),
            'T' => (&text[..i], 1 << 40),
            _ => (text, 1),
        },
        None => (text, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| {
            format!("expected bytes, or a size with a K, M, G or T suffix (20G), not '{text}'")
        })
}

/// A size (`512`, `512M`, `2G`) in MiB: RAM as the contract counts it.
pub fn mebibytes(text: &str) -> Result<u32> {
    let bad = || Error::Setting {
        given: text.to_string(),
        why: "expected a size in MiB, or with a K, M, G or T suffix (512M, 2G)".into(),
    };
    let (digits, kib_per_unit): (&str, u64) = match text.char_indices().last() {
        Some((i, 'K' | 'k')) => (&text[..i], 1),
        Some((i, 'M' | 'm')) => (&text[..i], 1 << 10),
        Some((i, 'G' | 'g')) => (&text[..i], 1 << 20),
        Some((i, 'T' | 't')) => (&text[..i], 1 << 30),
        _ => (text, 1 << 10),
    };
    let kib = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(kib_per_unit))
        .ok_or_else(bad)?;
    if kib % 1024 != 0 {
        return Err(bad());
    }
    u32::try_from(kib / 1024).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_adapters_on_the_command_line() {
        let v = value("a(uss)", "1:virtio-net-pci:,3::52:54:00:ab:cd:ef").unwrap();
        assert_eq!(
            <Vec<(u32, String, String)>>::try_from(v).unwrap(),
            [
                (1, "virtio-net-pci".to_string(), String::new()),
                (3, String::new(), "52:54:00:ab:cd:ef".to_string())
            ]
        );
        let none = value("a(uss)", "").unwrap();
        assert_eq!(<Vec<(u32, String, String)>>::try_from(none).unwrap(), []);
        assert!(value("a(uss)", "x:e1000:")
            .unwrap_err()
            .contains("ADAPTER:MODEL:MAC"));
        assert!(value("a(uss)", "1:e1000")
            .unwrap_err()
            .contains("not '1:e1000'"));
    }

    #[test]
    fn the_contract_parses_and_gives_the_types() {
        let p = properties();
        assert_eq!(p["Ram"].signature, "u");
        assert!(p["Ram"].writable);
        assert_eq!(p["ConsolePort"].signature, "q");
        assert_eq!(p["LegacyNetworking"].signature, "b");
        assert!(!p["State"].writable);
        assert_eq!(p["Tunnels"].signature, "a(uqsq)");
        assert_eq!(p["Ram"].applies, Applies::NextStart);
        assert_eq!(p["Adapters"].applies, Applies::Stopped);
        assert_eq!(p["CpuThrottling"].applies, Applies::Live);
    }

    /// Every setting says what a change does while the VM runs: none falls to Live unsaid.
    #[test]
    fn every_setting_of_the_contract_is_annotated() {
        let node = zbus_xml::Node::from_reader(VM_XML.as_bytes()).unwrap();
        let iface = &node.interfaces()[0];
        for p in iface.properties().filter(|p| p.access().write()) {
            let values: Vec<_> = p
                .annotations()
                .iter()
                .filter(|a| a.name() == APPLIES)
                .map(|a| a.value().to_string())
                .collect();
            assert!(
                matches!(values.as_slice(), [v] if ["next-start", "stopped", "live"].contains(&v.as_str())),
                "{}: {values:?}",
                p.name()
            );
        }
    }

    #[test]
    fn settings_take_the_contracts_types() {
        let (name, v) = setting("Ram=512", Use::Configure).unwrap();
        assert_eq!((name.as_str(), v), ("Ram", OwnedVariant::from(512u32)));
        let (_, v) = setting("ConsolePort=5000", Use::Configure).unwrap();
        assert_eq!(v, OwnedVariant::from(5000u16));
        let (_, v) = setting("LegacyNetworking=yes", Use::Configure).unwrap();
        assert_eq!(v, OwnedVariant::from(true));
        let (_, v) = setting("KernelCommandLine=console=ttyS0 quiet", Use::Configure).unwrap();
        assert_eq!(
            v,
            OwnedVariant::from(zbus::Str::from("console=ttyS0 quiet"))
        );
        let (_, v) = setting("Project=lab1", Use::Create).unwrap();
        assert_eq!(v, OwnedVariant::from(zbus::Str::from("lab1")));
    }

    #[test]
    fn bad_settings_say_what_to_change() {
        let why = |given: &str, usage| match setting(given, usage) {
            Err(Error::Setting { why, .. }) => why,
            other => panic!("{given}: {other:?}"),
        };
        assert_eq!(why("Ram", Use::Configure), "write it as Prop=Value");
        assert_eq!(
            why("Ram=lots", Use::Configure),
            "expected a number from 0 to 4294967295, not 'lots'"
        );
        assert_eq!(
            why("ConsolePort=70000", Use::Configure),
            "expected a number from 0 to 65535, not '70000'"
        );
        assert_eq!(why("State=running", Use::Configure), "State is read-only");
        assert_eq!(why("Project=x", Use::Configure), "Project is read-only");
        assert!(why("Rams=1", Use::Configure).starts_with("no such setting; the settings are "));
        assert_eq!(
            why("LegacyNetworking=maybe", Use::Configure),
            "expected yes or no, not 'maybe'"
        );
    }

    #[test]
    fn disk_sizes_are_bytes() {
        assert_eq!(bytes("1073741824"), Ok(1 << 30));
        assert_eq!(bytes("512M"), Ok(512 << 20));
        assert_eq!(bytes("20g"), Ok(20 << 30));
        assert_eq!(bytes("2T"), Ok(2 << 40));
        for bad in ["", "G", "1.5G", "-1", "99999999T"] {
            assert!(bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_are_mebibytes() {
        assert_eq!(mebibytes("512").unwrap(), 512);
        assert_eq!(mebibytes("512M").unwrap(), 512);
        assert_eq!(mebibytes("2G").unwrap(), 2048);
        assert_eq!(mebibytes("1T").unwrap(), 1 << 20);
        assert_eq!(mebibytes("2048K").unwrap(), 2);
        for bad in ["", "M", "1.5G", "100K", "-1", "5000T"] {
            assert!(mebibytes(bad).is_err(), "{bad}");
        }
    }
}
