//! D-Bus values to settings: every writable property by name, with its D-Bus type checked.

use zbus::Variant;

use super::error::Error;
use crate::vm::Setting;

/// Every writable property with its D-Bus signature, in the contract's order: for error
/// messages and tests (`parse` is the source of truth).
pub const WRITABLE: [(&str, &str); 18] = [
    ("Name", "s"),
    ("QemuPath", "s"),
    ("Ram", "u"),
    ("HdaDiskImage", "s"),
    ("HdbDiskImage", "s"),
    ("Adapters", "u"),
    ("AdapterType", "s"),
    ("MacAddress", "s"),
    ("KernelImage", "s"),
    ("Initrd", "s"),
    ("KernelCommandLine", "s"),
    ("Options", "s"),
    ("CpuThrottling", "u"),
    ("ProcessPriority", "s"),
    ("ConsolePort", "q"),
    ("MonitorPort", "q"),
    ("LegacyNetworking", "b"),
    ("Accelerator", "s"),
];

fn wrong_type(key: &str, want: &str, got: &Variant<'_>) -> Error {
    Error::InvalidArgument(format!(
        "{key} takes a value of D-Bus type '{want}', not '{}'",
        got.value_signature()
    ))
}

/// Variants may arrive wrapped once more (`v` inside `v`); the value is what counts.
fn inner<'a>(v: &'a Variant<'a>) -> &'a Variant<'a> {
    match v {
        Variant::Variant(boxed) => inner(boxed),
        other => other,
    }
}

pub fn parse(key: &str, value: &Variant<'_>) -> Result<Setting, Error> {
    let v = inner(value);
    let s = || match v {
        Variant::Str(s) => Ok(s.as_str().to_string()),
        other => Err(wrong_type(key, "s", other)),
    };
    let u = || match v {
        Variant::U32(n) => Ok(*n),
        other => Err(wrong_type(key, "u", other)),
    };
    let q = || match v {
        Variant::U16(n) => Ok(*n),
        other => Err(wrong_type(key, "q", other)),
    };
    Ok(match key {
        "Name" => Setting::Name(s()?),
        "QemuPath" => Setting::QemuPath(s()?),
        "Ram" => Setting::Ram(u()?),
        "HdaDiskImage" => Setting::HdaDiskImage(s()?),
        "HdbDiskImage" => Setting::HdbDiskImage(s()?),
        "Adapters" => Setting::Adapters(u()?),
        "AdapterType" => Setting::AdapterType(s()?),
        "MacAddress" => Setting::MacAddress(s()?),
        "KernelImage" => Setting::KernelImage(s()?),
        "Initrd" => Setting::Initrd(s()?),
        "KernelCommandLine" => Setting::KernelCommandLine(s()?),
        "Options" => Setting::Options(s()?),
        "CpuThrottling" => Setting::CpuThrottling(u()?),
        "ProcessPriority" => Setting::ProcessPriority(s()?),
        "ConsolePort" => Setting::ConsolePort(q()?),
        "MonitorPort" => Setting::MonitorPort(q()?),
        "LegacyNetworking" => match v {
            Variant::Bool(b) => Setting::LegacyNetworking(*b),
            other => return Err(wrong_type(key, "b", other)),
        },
        "Accelerator" => Setting::Accelerator(s()?),
        _ => {
            let known: Vec<&str> = WRITABLE.iter().map(|(k, _)| *k).collect();
            return Err(Error::InvalidArgument(format!(
                "'{}' is not a VM setting; the settings are: {}",
                crate::vm::settings::shown(key),
                known.join(", ")
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_writable_key_parses_with_its_type() {
        for (key, sig) in WRITABLE {
            let v = match sig {
                "s" => Variant::from("x"),
                "u" => Variant::from(1u32),
                "q" => Variant::from(1u16),
                "b" => Variant::from(true),
                _ => unreachable!(),
            };
            assert_eq!(parse(key, &v).unwrap().key(), key);
            let e = parse(key, &Variant::from(1.5f64)).unwrap_err();
            assert!(e.to_string().contains(&format!("'{sig}'")), "{e}");
        }
    }

    #[test]
    fn unknown_keys_list_the_known_ones() {
        let e = parse("Rom", &Variant::from(1u32)).unwrap_err().to_string();
        assert!(
            e.contains("InvalidArgument") && e.contains("Ram, HdaDiskImage"),
            "{e}"
        );
    }

    #[test]
    fn nested_variants_are_unwrapped() {
        let v = Variant::Variant(Box::new(Variant::from(512u32)));
        assert_eq!(parse("Ram", &v).unwrap(), Setting::Ram(512));
    }
}
