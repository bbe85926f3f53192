//! The options of OpenConsole and OpenGraphics, from D-Bus to the console's terms.

use std::collections::HashMap;
use zbus::OwnedVariant;

use super::error::Error;
use crate::vm::ViewOptions;

pub fn view_options(options: &HashMap<String, OwnedVariant>) -> Result<ViewOptions, Error> {
    let mut view = ViewOptions::default();
    let mut keys: Vec<&String> = options.keys().collect();
    keys.sort();
    for key in keys {
        let slot = match key.as_str() {
            "Replay" => &mut view.replay,
            "ReadOnly" => &mut view.read_only,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "OpenConsole has no option '{}'; it takes Replay (b) and ReadOnly (b)",
                    crate::vm::error::shown(key)
                )))
            }
        };
        let value = &options[key];
        *slot = value.downcast_ref::<bool>().map_err(|_| {
            Error::InvalidArgument(format!(
                "OpenConsole option {key} takes a value of D-Bus type 'b', not '{}'",
                value.value_signature()
            ))
        })?;
    }
    Ok(view)
}

/// OpenGraphics takes no option yet: any is refused, so none is silently ignored.
pub fn graphics_options(options: &HashMap<String, OwnedVariant>) -> Result<(), Error> {
    let mut keys: Vec<&String> = options.keys().collect();
    keys.sort();
    match keys.first() {
        None => Ok(()),
        Some(key) => Err(Error::InvalidArgument(format!(
            "OpenGraphics has no option '{}'; it takes none yet",
            crate::vm::error::shown(key)
        ))),
    }
}
