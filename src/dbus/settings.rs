//! Settings between D-Bus and the table (`model/settings.rs`): a value by its property name,
//! with its D-Bus type checked, and back.

use zbus::{OwnedVariant, Variant};

use super::error::Error;
use crate::model::settings::ROWS;
use crate::model::table::{Unfit, Value};
use crate::model::Setting;

/// Variants may arrive wrapped once more (`v` inside `v`); the value is what counts.
fn inner<'a>(v: &'a Variant<'a>) -> &'a Variant<'a> {
    match v {
        Variant::Variant(boxed) => inner(boxed),
        other => other,
    }
}

/// The value of a variant of one of the types settings use.
fn value(v: &Variant<'_>) -> Option<Value> {
    Some(match v {
        Variant::Str(s) => Value::Str(s.as_str().to_string()),
        Variant::U32(n) => Value::U32(*n),
        Variant::U16(n) => Value::U16(*n),
        Variant::Bool(b) => Value::Bool(*b),
        Variant::Array(a) if a.signature() == "a(uss)" => {
            Value::Adapters(Vec::<(u32, String, String)>::try_from(a.try_clone().ok()?).ok()?)
        }
        _ => return None,
    })
}

/// A setting's value as a variant; None only if it cannot be owned, which takes a file
/// descriptor no setting holds.
pub fn variant(value: Value) -> Option<OwnedVariant> {
    Some(match value {
        Value::Str(s) => OwnedVariant::from(zbus::Str::from(s)),
        Value::U32(n) => OwnedVariant::from(n),
        Value::U16(n) => OwnedVariant::from(n),
        Value::Bool(b) => OwnedVariant::from(b),
        Value::Adapters(v) => OwnedVariant::try_from(Variant::from(v)).ok()?,
    })
}

pub fn parse(key: &str, value: &Variant<'_>) -> Result<Setting, Error> {
    let v = inner(value);
    let unfit = match self::value(v) {
        Some(value) => match Setting::from_value(key, value) {
            Ok(setting) => return Ok(setting),
            Err(unfit) => unfit,
        },
        None => match ROWS.iter().find(|row| row.key == key) {
            Some(row) => Unfit::Type(row.signature),
            None => Unfit::Unknown,
        },
    };
    Err(match unfit {
        Unfit::Type(want) => Error::InvalidArgument(format!(
            "{key} takes a value of D-Bus type '{want}', not '{}'",
            v.value_signature()
        )),
        Unfit::Unknown => {
            let known: Vec<&str> = ROWS.iter().map(|row| row.key).collect();
            Error::InvalidArgument(format!(
                "'{}' is not a VM setting; the settings are: {}",
                crate::vm::error::shown(key),
                known.join(", ")
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_writable_key_parses_with_its_type() {
        for row in ROWS {
            let (key, sig) = (row.key, row.signature);
            let v = match sig {
                "s" => Variant::from("x"),
                "u" => Variant::from(1u32),
                "q" => Variant::from(1u16),
                "b" => Variant::from(true),
                "a(uss)" => Variant::from(vec![(0u32, "e1000".to_string(), String::new())]),
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
    fn custom_adapters_go_to_their_variant_and_back() {
        let entries = vec![(1u32, "virtio-net-pci".to_string(), String::new())];
        let v = variant(Value::Adapters(entries.clone())).unwrap();
        assert_eq!(v.value_signature(), "a(uss)");
        assert_eq!(
            parse("CustomAdapters", &v).unwrap(),
            Setting::CustomAdapters(entries)
        );
        let e = parse("CustomAdapters", &Variant::from(vec![1u32])).unwrap_err();
        assert!(e.to_string().contains("type 'a(uss)', not 'au'"), "{e}");
    }

    #[test]
    fn nested_variants_are_unwrapped() {
        let v = Variant::Variant(Box::new(Variant::from(512u32)));
        assert_eq!(parse("Ram", &v).unwrap(), Setting::Ram(512));
    }
}
