//! The options of OpenConsole, OpenGraphics and StartCapture, from D-Bus to the core's terms.

use std::collections::HashMap;
use zbus::OwnedVariant;

use super::error::Error;
use crate::vm::capture::Asked;
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

/// The options of StartCapture: SnapLength (u) and Direction (s), each checked by the
/// core.
pub fn capture_options(options: &HashMap<String, OwnedVariant>) -> Result<Asked, Error> {
    let mut asked = Asked::default();
    let mut keys: Vec<&String> = options.keys().collect();
    keys.sort();
    for key in keys {
        let value = &options[key];
        let wrong = |want: &str| {
            Error::InvalidArgument(format!(
                "StartCapture option {key} takes a value of D-Bus type '{want}', not '{}'",
                value.value_signature()
            ))
        };
        match key.as_str() {
            "SnapLength" => {
                asked.snap_length = Some(value.downcast_ref::<u32>().map_err(|_| wrong("u"))?)
            }
            "Direction" => {
                let s: &str = value.downcast_ref().map_err(|_| wrong("s"))?;
                asked.direction = Some(s.to_string());
            }
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "StartCapture has no option '{}'; it takes SnapLength (u) and Direction (s)",
                    crate::vm::error::shown(key)
                )))
            }
        }
    }
    Ok(asked)
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
