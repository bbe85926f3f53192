//! `get NAME PROP...`: the bare values of properties, one a line in the order asked (as
//! `systemctl show -P`), or with `--json` one object; from one GetAll.

use std::collections::BTreeMap;
use zbus::fdo::PropertiesProxy;
use zbus::names::InterfaceName;
use zbus::OwnedVariant;

use crate::cli::Get;
use crate::error::{Error, Result};
use crate::output::{self, json, text};

/// Every property of the VM named `name`.
pub(super) async fn all(
    conn: &zbus::Connection,
    name: &str,
) -> Result<BTreeMap<String, OwnedVariant>> {
    let vm = super::find(conn, name).await?;
    let props = PropertiesProxy::builder(conn)
        .destination("org.gns3.Qemu")
        .path(vm.inner().path().to_owned())
        .build()
        .await
        .map_err(Error::Connect)?;
    Ok(props
        .get_all(InterfaceName::from_static_str_unchecked("org.gns3.Qemu.VM"))
        .await
        .map_err(|e| Error::call(format!("read the properties of {name}"))(e.into()))?
        .into_iter()
        .collect())
}

pub async fn run(conn: &zbus::Connection, g: Get) -> Result<()> {
    let all = all(conn, &g.vm).await?;
    let chosen = g
        .properties
        .iter()
        .map(|p| {
            all.get_key_value(p).ok_or_else(|| Error::NoProperty {
                vm: g.vm.clone(),
                property: p.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if g.json.json {
        let object: serde_json::Map<_, _> = chosen
            .iter()
            .map(|(k, v)| ((*k).clone(), json(v)))
            .collect();
        return output::print_json(&object.into());
    }
    let out: String = chosen
        .iter()
        .map(|(_, v)| format!("{}\n", text(v)))
        .collect();
    output::print(&out)
}
