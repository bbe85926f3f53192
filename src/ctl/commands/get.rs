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

/// The properties `names` of `all` (VM `vm`'s), in the order asked; an unknown one is the
/// error.
pub(super) fn pick<'a>(
    all: &'a BTreeMap<String, OwnedVariant>,
    vm: &str,
    names: &[String],
) -> Result<Vec<(&'a String, &'a OwnedVariant)>> {
    names
        .iter()
        .map(|p| {
            all.get_key_value(p).ok_or_else(|| Error::NoProperty {
                vm: vm.to_string(),
                property: p.clone(),
            })
        })
        .collect()
}

/// `chosen` as one JSON object on stdout.
pub(super) fn print_object(chosen: &[(&String, &OwnedVariant)]) -> Result<()> {
    let object: serde_json::Map<_, _> = chosen
        .iter()
        .map(|(k, v)| ((*k).clone(), json(v)))
        .collect();
    output::print_json(&object.into())
}

pub async fn run(conn: &zbus::Connection, g: Get) -> Result<()> {
    let all = all(conn, &g.vm).await?;
    let chosen = pick(&all, &g.vm, &g.properties)?;
    if g.json.json {
        return print_object(&chosen);
    }
    let out: String = chosen
        .iter()
        .map(|(_, v)| format!("{}\n", text(v)))
        .collect();
    output::print(&out)
}
