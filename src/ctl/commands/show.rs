//! `show NAME [-p PROP]... [--value | --json]`: the VM's properties (one GetAll), sorted,
//! as `Prop=value` lines like `systemctl show`, bare values, or a JSON object.

use crate::cli::Show;
use crate::error::{Error, Result};
use crate::output::{self, json, text};

pub async fn run(conn: &zbus::Connection, s: Show) -> Result<()> {
    let all = super::get::all(conn, &s.vm).await?;
    let chosen: Vec<(&String, &zbus::OwnedVariant)> = if s.properties.is_empty() {
        all.iter().collect()
    } else {
        s.properties
            .iter()
            .map(|p| {
                all.get_key_value(p).ok_or_else(|| Error::NoProperty {
                    vm: s.vm.clone(),
                    property: p.clone(),
                })
            })
            .collect::<Result<_>>()?
    };
    if s.json.json {
        let object: serde_json::Map<_, _> = chosen
            .iter()
            .map(|(k, v)| ((*k).clone(), json(v)))
            .collect();
        return output::print_json(&object.into());
    }
    let mut out = String::new();
    for (k, v) in chosen {
        if s.value {
            out.push_str(&format!("{}\n", text(v)));
        } else {
            out.push_str(&format!("{k}={}\n", text(v)));
        }
    }
    output::print(&out)
}
