//! The machinery behind the settings table (`settings.rs`): from one row per setting,
//! [`settings!`] makes the stored record's struct, its defaults, the change enum clients send,
//! the list of writable properties with their D-Bus types and documentation, the conversion
//! from and to the four D-Bus types settings use, the check each change must pass, and which
//! changes need a stopped VM or apply to a running one at once.

/// A setting's value as it travels on D-Bus: one of the types settings use.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    U32(u32),
    U16(u16),
    Bool(bool),
    /// `a(uss)`: CustomAdapters' (adapter, model, MAC) entries.
    Adapters(Vec<(u32, String, String)>),
}

impl Value {
    /// Its D-Bus signature.
    pub fn signature(&self) -> &'static str {
        match self {
            Value::Str(_) => <String as Wire>::SIGNATURE,
            Value::U32(_) => <u32 as Wire>::SIGNATURE,
            Value::U16(_) => <u16 as Wire>::SIGNATURE,
            Value::Bool(_) => <bool as Wire>::SIGNATURE,
            Value::Adapters(_) => <Vec<(u32, String, String)> as Wire>::SIGNATURE,
        }
    }
}

/// A type a setting travels as.
pub trait Wire: Sized {
    const SIGNATURE: &'static str;
    fn into_value(self) -> Value;
    fn from_value(v: Value) -> Option<Self>;
}

macro_rules! wire {
    ($ty:ty, $variant:ident, $signature:literal) => {
        impl Wire for $ty {
            const SIGNATURE: &'static str = $signature;
            fn into_value(self) -> Value {
                Value::$variant(self)
            }
            fn from_value(v: Value) -> Option<Self> {
                match v {
                    Value::$variant(x) => Some(x),
                    _ => None,
                }
            }
        }
    };
}
wire!(String, Str, "s");
wire!(u32, U32, "u");
wire!(u16, U16, "q");
wire!(bool, Bool, "b");
wire!(Vec<(u32, String, String)>, Adapters, "a(uss)");

/// A type a setting is stored as, and the type it travels as. A stored type that is not a
/// wire type itself (an enum of names) shows as its name; its check turns names into it.
pub trait Stored {
    type Wire: Wire;
    fn to_wire(&self) -> Self::Wire;
}

macro_rules! stored_as_itself {
    ($($ty:ty),*) => {$(
        impl Stored for $ty {
            type Wire = $ty;
            fn to_wire(&self) -> $ty {
                self.clone()
            }
        }
    )*};
}
stored_as_itself!(String, u32, u16, bool);

/// What a change of a setting does to a VM whose QEMU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// Stored; QEMU gets it at its next start.
    NextStart,
    /// Refused while QEMU runs: the process holds it (a port, a disk, a PCI device).
    Stopped,
    /// Applied to the running QEMU at once, and stored.
    Live,
}

/// One writable property, as introspection and error messages show it.
#[derive(Debug)]
pub struct Row {
    pub key: &'static str,
    pub signature: &'static str,
    pub when: When,
    pub doc: &'static str,
}

/// Why a value cannot become a [`Setting`](super::Setting) (before any check of the value).
#[derive(Debug, PartialEq)]
pub enum Unfit {
    /// No setting has this name.
    Unknown,
    /// The setting takes another D-Bus type: this one.
    Type(&'static str),
}

/// Declares the settings, one row each:
/// `/// doc` then `Key field: StoredType = default, When;`.
/// See the module's comment for what comes from the rows.
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        $key:ident $field:ident : $ty:ty = $default:expr, $when:ident;
    )+) => {
        /// Everything a client may set, as stored in `vm.json`. A record written before a
        /// setting existed reads as that setting's default.
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
        pub struct Settings {
            $( $(#[doc = $doc])+ pub $field: $ty, )+
        }

        impl Default for Settings {
            fn default() -> Self {
                Settings { $( $field: $default, )+ }
            }
        }

        /// One requested change, carrying the value as the client sent it; [`apply_one`]
        /// checks it.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Setting {
            $( $key(<$ty as $crate::model::table::Stored>::Wire), )+
        }

        /// Every writable property, in the table's order.
        pub const ROWS: &[$crate::model::table::Row] = &[$(
            $crate::model::table::Row {
                key: stringify!($key),
                signature:
                    <<$ty as $crate::model::table::Stored>::Wire as $crate::model::table::Wire>::SIGNATURE,
                when: $crate::model::table::When::$when,
                doc: concat!($($doc, "\n"),+),
            },
        )+];

        /// The check of each setting: the value a client sent, to what is stored, or why not.
        #[allow(clippy::ptr_arg)]
        pub trait Check {
            type Error;
            $( fn $field(
                &self,
                v: <$ty as $crate::model::table::Stored>::Wire,
            ) -> Result<$ty, Self::Error>; )+
        }

        impl Setting {
            /// The D-Bus property name.
            pub fn key(&self) -> &'static str {
                match self { $( Setting::$key(_) => stringify!($key), )+ }
            }

            /// The change of `key` to `value`.
            pub fn from_value(
                key: &str,
                value: $crate::model::table::Value,
            ) -> Result<Setting, $crate::model::table::Unfit> {
                use $crate::model::table::{Stored, Unfit, Wire};
                match key {
                    $( stringify!($key) => <$ty as Stored>::Wire::from_value(value)
                        .map(Setting::$key)
                        .ok_or(Unfit::Type(<$ty as Stored>::Wire::SIGNATURE)), )+
                    _ => Err(Unfit::Unknown),
                }
            }
        }

        impl Settings {
            /// The value of `key` as D-Bus shows it.
            pub fn get(&self, key: &str) -> Option<$crate::model::table::Value> {
                use $crate::model::table::{Stored, Wire};
                match key {
                    $( stringify!($key) => Some(self.$field.to_wire().into_value()), )+
                    _ => None,
                }
            }

            /// The rows of the settings that differ between `self` and `other`.
            pub fn differing(&self, other: &Settings) -> Vec<&'static $crate::model::table::Row> {
                let differs = [$( self.$field != other.$field, )+];
                ROWS.iter().zip(differs).filter(|(_, d)| *d).map(|(row, _)| row).collect()
            }
        }

        /// `change`, checked by `check`, written into `s`.
        pub fn apply_one<C: Check>(s: &mut Settings, change: Setting, check: &C) -> Result<(), C::Error> {
            match change {
                $( Setting::$key(v) => s.$field = check.$field(v)?, )+
            }
            Ok(())
        }
    };
}
pub(super) use settings;
