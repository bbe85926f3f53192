//! `show NAME [-p PROP]... [--value | --json]`: the VM's properties (one GetAll), sorted,
//! as `Prop=value` lines like `systemctl show`, bare values, or a JSON object.

use std::collections::BTreeMap;
use zbus::fdo::PropertiesProxy;
use zbus::names::InterfaceName;

use crate::cli::Show;
use crate::error::{Error, Result};
use crate::output::{self, json, text};

pub async fn run(conn: &zbus::Connection, s: Show) -> Result<()> {
    let vm = super::find(conn, &s.vm).await?;
    let props = PropertiesProxy::builder(conn)
        .destination("org.gns3.Qemu")
        .path(vm.inner().path().to_owned())
        .build()
        .await
        .map_err(Error::Connect)?;
    let all: BTreeMap<String, _> = props
        .get_all(InterfaceName::from_static_str_unchecked("org.gns3.Qemu.VM"))
        .await
        .map_err(|e| Error::call(format!("read the properties of {}", s.vm))(e.into()))?
        .into_iter()
        .collect();
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
